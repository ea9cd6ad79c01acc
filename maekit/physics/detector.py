"""Detector-lite imaging: the visible final-state particles of an event -> one jet image on a CMS-like
(eta, phi) grid, channels-last. numpy only (no generator needed), so it is tested on hand-made particles.

Every approximation is listed in docs/physics.md. In short:
- one fixed cell grid everywhere (CMS ECAL barrel crystals: 0.0174 in eta, 2 pi / 360 in phi), no endcap
  geometry, no magnetic field (straight tracks), no pile-up, no beam spot, no noise, no zero suppression;
- each visible particle goes to exactly one energy channel (particle-flow-like): tracks (charged hadrons and
  muons inside the tracker), ECAL (photons and electrons), HCAL (neutral hadrons, and charged hadrons the
  tracker does not see), so the energy channels add up to the visible transverse momentum in the window;
- HCAL towers are 5 x 5 crystals (0.087 x 0.087); a tower's deposit is spread evenly over its 25 pixels;
- optional Gaussian resolution per particle (calorimeter energy, track impact parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ECAL_DETA = 0.0174  # CMS ECAL barrel crystal size in eta
ECAL_DPHI = 2 * math.pi / 360  # 360 crystals in phi (0.01745)
N_PHI = 360
HCAL_BLOCK = 5  # an HCAL tower covers 5 x 5 crystals (0.087 x 0.087)
TRACKER_ETA = 2.5  # tracks only inside |eta| < 2.5
TRACK_RMAX_MM = 600.0  # particles produced further out than this are not reconstructed as tracks
PIXEL_RADII_MM = (44.0, 73.0, 102.0)  # CMS barrel pixel layers (2011-2012 detector)
PIXEL_HALF_LENGTH_MM = 265.0
HIT_PT_MIN = 0.1  # GeV: charged particles below this leave no pixel hits in this model
# resolutions: sigma(E)/E = a / sqrt(E) (+) c, E in GeV
ECAL_RES = (0.03, 0.005)
HCAL_RES = (1.0, 0.05)
# track impact-parameter resolution: sigma = a (+) b / pT, mm, pT in GeV
D0_RES = (0.010, 0.090)
DZ_RES = (0.020, 0.120)

CHANNEL_NAMES = {
    3: ("tracks_pt", "ecal", "hcal"),
    8: ("tracks_pt", "tracks_d0", "tracks_dz", "ecal", "hcal", "bpix1", "bpix2", "bpix3"),
}
CHANNEL_UNITS = {
    "tracks_pt": "GeV (sum of track pT)",
    "tracks_d0": "GeV*mm (sum of track pT * d0)",
    "tracks_dz": "GeV*mm (sum of track pT * dz)",
    "ecal": "GeV (transverse energy)",
    "hcal": "GeV (transverse energy, tower spread over 5x5 pixels)",
    "bpix1": "hits",
    "bpix2": "hits",
    "bpix3": "hits",
}
# channels whose pixels are transverse momenta / energies (they add up to the jet's visible pT)
ENERGY_CHANNELS = {3: (0, 1, 2), 8: (0, 3, 4)}

_NEUTRINOS = (12, 14, 16)


@dataclass(frozen=True)
class Detector:
    size: int = 125  # pixels per side (odd: the jet axis is in the middle pixel)
    channels: int = 3  # 3: tracks, ECAL, HCAL; 8: + d0, dz, three pixel layers
    smear: bool = True  # Gaussian resolutions (calorimeter energies, track impact parameters)

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_NAMES:
            raise ValueError(f"channels must be 3 or 8, got {self.channels}")
        if self.size < 1 or self.size % 2 == 0:
            raise ValueError(f"image size must be odd and positive, got {self.size}")

    @property
    def names(self) -> tuple[str, ...]:
        return CHANNEL_NAMES[self.channels]


def eta_phi(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(px, py)
    return pt, np.arcsinh(pz / np.maximum(pt, 1e-12)), np.arctan2(py, px)


def _cells(eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global crystal indices: ieta = floor(eta / 0.0174), iphi in 0..359."""
    ieta = np.floor(eta / ECAL_DETA).astype(np.int64)
    iphi = np.floor(np.mod(phi, 2 * math.pi) / ECAL_DPHI).astype(np.int64) % N_PHI
    return ieta, iphi


def _local(
    ieta: np.ndarray, iphi: np.ndarray, ie0: int, ip0: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global crystal indices -> (row, col) in the image centred on crystal (ie0, ip0); phi wraps around."""
    half = size // 2
    row = ieta - ie0 + half
    col = (np.mod(iphi - ip0 + N_PHI // 2, N_PHI) - N_PHI // 2) + half
    inside = (row >= 0) & (row < size) & (col >= 0) & (col < size)
    return row, col, inside


def _deposit(img: np.ndarray, ch: int, row: np.ndarray, col: np.ndarray, inside: np.ndarray, w: np.ndarray) -> None:
    np.add.at(img[:, :, ch], (row[inside], col[inside]), w[inside])


def _smear_energy(rng: np.random.Generator, e: np.ndarray, res: tuple[float, float]) -> np.ndarray:
    """Relative Gaussian smearing factor E'/E (>= 0) with sigma/E = a/sqrt(E) (+) c."""
    a, c = res
    rel = np.sqrt(a * a / np.maximum(e, 1e-9) + c * c)
    return np.clip(1.0 + rel * rng.standard_normal(e.shape), 0.0, None)


def jet_image(
    parts: dict[str, np.ndarray], jet_eta: float, jet_phi: float, det: Detector, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Image [size, size, C] float32 of the visible final-state particles around the jet axis.

    parts: arrays of equal length: px, py, pz, e (GeV), pid (PDG id), charge, vx, vy, vz (production vertex, mm).
    Rows are eta, columns phi; the jet axis lies in the middle pixel (size // 2, size // 2).
    rng is needed when det.smear is on.
    """
    if det.smear and rng is None:
        raise ValueError("jet_image: smearing needs a numpy Generator")
    size, nc = det.size, det.channels
    img = np.zeros((size, size, nc), np.float32)
    pid = np.abs(parts["pid"].astype(np.int64))
    visible = ~np.isin(pid, _NEUTRINOS)
    px, py, pz, e = (parts[k][visible].astype(np.float64) for k in ("px", "py", "pz", "e"))
    pid, charge = pid[visible], parts["charge"][visible]
    vx, vy, vz = (parts[k][visible].astype(np.float64) for k in ("vx", "vy", "vz"))
    pt, eta, phi = eta_phi(px, py, pz)
    (ie0,), (ip0,) = _cells(np.array([jet_eta]), np.array([jet_phi]))
    ieta, iphi = _cells(eta, phi)
    row, col, inside = _local(ieta, iphi, int(ie0), int(ip0), size)

    names = det.names
    ch = {n: i for i, n in enumerate(names)}
    r0 = np.hypot(vx, vy)
    charged = charge != 0
    em = (pid == 11) | (pid == 22)
    track = charged & ~em & (np.abs(eta) < TRACKER_ETA) & (r0 < TRACK_RMAX_MM)
    muon = pid == 13
    hcal = ~em & ~track & ~muon  # neutral hadrons + charged hadrons the tracker misses (muons outside: lost)

    # tracks: transverse momentum (tracking resolution neglected)
    _deposit(img, ch["tracks_pt"], row[track], col[track], inside[track], pt[track])
    # calorimeters measure energy: pixel = transverse energy E / cosh(eta) (= pT for massless particles)
    # ECAL: photons and electrons
    et = e[em] / np.cosh(eta[em]) * (_smear_energy(rng, e[em], ECAL_RES) if det.smear else 1.0)
    _deposit(img, ch["ecal"], row[em], col[em], inside[em], et)
    # HCAL: tower of 5 x 5 crystals, deposit spread evenly over its 25 pixels
    et = e[hcal] / np.cosh(eta[hcal]) * (_smear_energy(rng, e[hcal], HCAL_RES) if det.smear else 1.0)
    te, tp = np.floor_divide(ieta[hcal], HCAL_BLOCK), np.floor_divide(iphi[hcal], HCAL_BLOCK)
    for a in range(HCAL_BLOCK):
        for b in range(HCAL_BLOCK):
            r, c, ins = _local(te * HCAL_BLOCK + a, tp * HCAL_BLOCK + b, int(ie0), int(ip0), size)
            _deposit(img, ch["hcal"], r, c, ins, et / HCAL_BLOCK**2)

    if nc == 8:
        tpx, tpy, tpz, tpt = px[track], py[track], pz[track], pt[track]
        x, y, z = vx[track], vy[track], vz[track]
        d0 = (x * tpy - y * tpx) / tpt  # signed transverse distance of closest approach to the beam line
        dz = z - (x * tpx + y * tpy) / tpt * (tpz / tpt)  # z at that point
        if det.smear:
            d0 = d0 + np.hypot(D0_RES[0], D0_RES[1] / tpt) * rng.standard_normal(d0.shape)
            dz = dz + np.hypot(DZ_RES[0], DZ_RES[1] / tpt) * rng.standard_normal(dz.shape)
        _deposit(img, ch["tracks_d0"], row[track], col[track], inside[track], tpt * d0)
        _deposit(img, ch["tracks_dz"], row[track], col[track], inside[track], tpt * dz)
        # pixel hits: straight line from the production vertex to each barrel layer it reaches
        hit = charged & (pt > HIT_PT_MIN)
        ux, uy = px[hit] / pt[hit], py[hit] / pt[hit]
        x, y, z, cot, rr = vx[hit], vy[hit], vz[hit], pz[hit] / pt[hit], r0[hit]
        for k, radius in enumerate(PIXEL_RADII_MM):
            b = x * ux + y * uy
            ok = rr < radius
            t = -b + np.sqrt(np.maximum(b * b - rr * rr + radius * radius, 0.0))
            hx, hy, hz = x + t * ux, y + t * uy, z + t * cot
            ok &= np.abs(hz) < PIXEL_HALF_LENGTH_MM
            he, hp = _cells(np.arcsinh(hz / radius), np.arctan2(hy, hx))
            r, c, ins = _local(he, hp, int(ie0), int(ip0), size)
            _deposit(img, ch[f"bpix{k + 1}"], r[ok], c[ok], ins[ok], np.ones(int(ok.sum())))
    return img


def pixel_offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(deta [size], dphi [size]) of the pixel centres relative to the centre of the middle pixel."""
    k = np.arange(size) - size // 2
    return k * ECAL_DETA, k * ECAL_DPHI
