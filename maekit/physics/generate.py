"""`maekit jets generate`: quark and gluon jet images from Pythia 8 + FastJet, written in the ML4SCI quark/gluon
HDF5 layout (X_jets (N, H, W, C) float32 channels-last, y (N,) 0 = quark / 1 = gluon, pt, m0).

Recipe (Komiske, Metodiev, Thaler, "Energy Flow Networks", JHEP 01 (2019) 121; the EnergyFlow qg_jets samples):
pp at 14 TeV, q qbar -> Z(-> nu nu) g for gluon jets and q g -> Z(-> nu nu) q (q = u, d, s) for quark jets,
hadronisation and multiple interactions on with Pythia's default tune, anti-kT R = 0.4 jets (FastJet) of the
visible final-state particles; the leading jet is kept if its pT is in the window and |y| below the cut.
Images: physics/detector.py. Details, settings, approximations and measured speed: docs/physics.md.

The work is cut into jobs of at most `chunk` jets (both classes); job k has its own seeds derived from
(seed, k), so the file depends on (settings, seed, n) only, not on the number of worker processes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MaekitError
from .detector import CHANNEL_NAMES, CHANNEL_UNITS, ECAL_DETA, ECAL_DPHI, ENERGY_CHANNELS, Detector, jet_image

PYTHIA_PIN = "pythia8mc==8.317.2"
INSTALL_HINT = "install with pip install 'maekit[physics]'"
_NEUTRINOS = (12, 14, 16)
# the prefilter's partons: all but neutrinos (and an undecayed Z, never there by default)
_INVISIBLE = (*_NEUTRINOS, 23)
QUARK, GLUON = 0, 1  # labels, as in the ML4SCI quark/gluon files


def require_physics() -> None:
    """A one-line MaekitError when the optional physics extra is missing."""
    for mod in ("pythia8mc", "fastjet", "awkward"):
        try:
            __import__(mod)
        except ImportError:
            raise MaekitError(
                f"maekit jets generate needs the physics extra ({mod} is not installed): {INSTALL_HINT}"
            ) from None


@dataclass(frozen=True)
class JetGenConfig:
    n: int = 1000
    channels: int = 3  # 3: tracks, ECAL, HCAL; 8: tracks, d0, dz, ECAL, HCAL, 3 pixel layers
    size: int = 125  # image pixels per side
    pt_min: float = 500.0  # GeV, leading-jet pT window
    pt_max: float = 550.0
    abs_y_max: float = 2.0  # leading-jet |rapidity| cut
    jet_r: float = 0.4
    sqrt_s: float = 14000.0
    seed: int = 0
    quark_fraction: float = 0.5
    pthat_min: float | None = None  # PhaseSpace:pTHatMin; default pt_min - 175 GeV (see docs/physics.md)
    prefilter: bool = True  # parton-level early veto of events that cannot give a jet in the window (docs/physics.md)
    smear: bool = True  # detector resolutions
    chunk: int = 200  # jets per job (the file depends on it: job k's seeds come from (seed, k))
    batch: int = 100  # events per Pythia nextBatch call

    @property
    def pthat(self) -> float:
        return self.pt_min - 175.0 if self.pthat_min is None else self.pthat_min

    def validate(self) -> None:
        if self.n < 1:
            raise MaekitError(f"--n must be >= 1, got {self.n}")
        if self.channels not in CHANNEL_NAMES:
            raise MaekitError(f"--channels must be 3 or 8, got {self.channels}")
        if self.size < 1 or self.size % 2 == 0:
            raise MaekitError(
                f"--size must be odd and positive (the jet axis sits in the middle pixel), got {self.size}"
            )
        if not 0 < self.pt_min < self.pt_max:
            raise MaekitError(f"need 0 < --pt-min < --pt-max, got {self.pt_min:g} and {self.pt_max:g}")
        if not 0.0 <= self.quark_fraction <= 1.0:
            raise MaekitError(f"--quark-fraction must be in [0, 1], got {self.quark_fraction}")
        if not 0 < self.pthat < self.pt_max:
            raise MaekitError(f"--pthat-min must be in (0, pt-max), got {self.pthat}")
        if self.abs_y_max <= 0 or self.jet_r <= 0 or self.chunk < 1 or self.batch < 1:
            raise MaekitError("--abs-y-max, jet R, --chunk and batch must be positive")
        if not 0 <= self.seed < 2**63:
            raise MaekitError(f"--seed must be a non-negative integer, got {self.seed}")


def pythia_settings(cfg: JetGenConfig, label: int, seed: int) -> list[str]:
    """The Pythia settings of one class (label QUARK or GLUON); everything else is Pythia's default."""
    process = "WeakBosonAndParton:qg2gmZq = on" if label == QUARK else "WeakBosonAndParton:qqbar2gmZg = on"
    return [
        f"Beams:eCM = {cfg.sqrt_s:g}",
        process,
        "WeakZ0:gmZmode = 2",  # pure Z0 (no gamma*), Z -> neutrinos only: nothing visible recoils
        "23:onMode = off",
        "23:onIfAny = 12 14 16",
        f"PhaseSpace:pTHatMin = {cfg.pthat:g}",
        "Print:quiet = on",
        "Next:numberCount = 0",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
    ]


def plan(cfg: JetGenConfig) -> list[tuple[int, int, int, int]]:
    """Jobs (index, first row, quark jets, gluon jets): sizes <= chunk, the quark fraction spread evenly."""
    jobs, start = [], 0
    n_quark_total = round(cfg.n * cfg.quark_fraction)
    k = 0
    while start < cfg.n:
        m = min(cfg.chunk, cfg.n - start)
        q = round(n_quark_total * (start + m) / cfg.n) - round(n_quark_total * start / cfg.n)
        jobs.append((k, start, q, m - q))
        start += m
        k += 1
    return jobs


def _job_seeds(seed: int, index: int) -> tuple[int, int, np.random.Generator]:
    ss = np.random.SeedSequence([seed, index])
    a, b, c = ss.spawn(3)
    # Pythia's Random:seed must be in [1, 900000000]
    return (
        int(a.generate_state(1)[0]) % 900_000_000 + 1,
        int(b.generate_state(1)[0]) % 900_000_000 + 1,
        np.random.default_rng(c),
    )


_BANNER_DONE = False


def _quiet_fastjet_banner() -> None:
    """FastJet prints its banner to stdout on the first clustering of a process: do that clustering with
    file descriptor 1 pointed at /dev/null."""
    global _BANNER_DONE
    if _BANNER_DONE:
        return
    import fastjet

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        fastjet.ClusterSequence(
            [fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)], fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4)
        )
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _BANNER_DONE = True


# The parton-level prefilter. Nearly all of Pythia's time goes into the interleaved evolution of multiple
# interactions and initial-state radiation below a few GeV (measured: evolving an event down to 5 GeV costs about
# 3 % of finishing it). So when the evolution passes PREFILTER_SCALE the partons are clustered, and events whose
# leading parton-level jet is far from the window are vetoed; Pythia then starts a new event. The margins are wide
# so that the jets lost are rare (about 1 %, measured with benchmarks/jets_prefilter.py; docs/physics.md).
PREFILTER_SCALE = 5.0  # GeV
PREFILTER_LOW_R, PREFILTER_LOW = 0.6, 15.0  # keep if the leading R = 0.6 parton jet has pT >= pt_min - 15 GeV
PREFILTER_HIGH_R, PREFILTER_HIGH = 0.4, 25.0  # ... and the leading R = 0.4 parton jet has pT <= pt_max + 25 GeV
PREFILTER_DY = 0.1  # ... and |y| < abs_y_max + 0.1
PREFILTER_GIVE_UP = 50_000  # vetoes in a row that mean the window is out of reach (about 15 CPU-seconds)


def _make_pythia(cfg: JetGenConfig, label: int, seed: int, record: bool = False):
    """A Pythia instance for one class, with the event filter hook (light quarks, parton-level prefilter).
    record=True: the prefilter vetoes nothing and records the parton-level jets of every event (hook.records)."""
    import pythia8mc

    py = pythia8mc.Pythia("", False)
    for s in pythia_settings(cfg, label, seed):
        if not py.readString(s):
            raise MaekitError(f"Pythia rejected the setting {s!r}")
    hook = _event_filter(cfg, light_quarks=label == QUARK, record=record)
    py.setUserHooksPtr(hook)
    if not py.init():
        raise MaekitError("Pythia failed to initialise (see its messages above)")
    return py, hook


def prefilter_keeps(
    wide_pt: float,
    lead_pt: float,
    lead_y: float,
    cfg: JetGenConfig,
    low: float = PREFILTER_LOW,
    high: float = PREFILTER_HIGH,
    dy: float = PREFILTER_DY,
) -> bool:
    """The prefilter's decision from the parton-level jets: the leading R = 0.6 jet's pT, the leading R = 0.4 jet's
    pT and rapidity."""
    return wide_pt >= cfg.pt_min - low and lead_pt <= cfg.pt_max + high and abs(lead_y) < cfg.abs_y_max + dy


def _event_filter(cfg: JetGenConfig, light_quarks: bool, record: bool = False):
    """The UserHooks of a job:
    - process level (before any showering): veto q g -> Z q events whose outgoing quark is c or b (quark jets are
      u, d, s);
    - parton level, once the interleaved evolution reaches PREFILTER_SCALE (doVetoPT): cluster the final partons
      (all but neutrinos) with anti-kT and veto unless the leading jets are near the pT window and |y| cut."""
    import fastjet
    import pythia8mc

    wide_def = fastjet.JetDefinition(fastjet.antikt_algorithm, PREFILTER_LOW_R)
    lead_def = fastjet.JetDefinition(fastjet.antikt_algorithm, PREFILTER_HIGH_R)
    prefilter = cfg.prefilter or record
    low = cfg.pt_min - PREFILTER_LOW  # the lower bound of prefilter_keeps, for its two shortcuts

    class EventFilter(pythia8mc.UserHooks):
        def __init__(self):
            super().__init__()
            self.vetoed_heavy_flavour = 0
            self.prefilter_vetoed = 0
            self.in_a_row = 0
            # record mode: per event (pTHat, leading R = 0.6 jet pT, leading R = 0.4 jet pT and rapidity)
            self.records: list[tuple[float, float, float, float]] = []

        def canVetoProcessLevel(self):
            return light_quarks

        def doVetoProcessLevel(self, process):
            for i in range(process.size()):
                p = process[i]
                if p.status() == 23 and p.isQuark():
                    if p.idAbs() > 3:
                        self.vetoed_heavy_flavour += 1
                        return True
                    return False
            return False

        def canVetoPT(self):
            return prefilter

        def scaleVetoPT(self):
            return PREFILTER_SCALE

        def doVetoPT(self, iPos, event):
            if iPos > 3:  # 0-3: the interleaved evolution of the hard system; 4-5: resonance decays
                return False
            final = [p for p in event.particles() if p.isFinal() and p.idAbs() not in _INVISIBLE]
            scalar_pt = sum(p.pT() for p in final)
            wide_pt = lead_pt = 0.0
            lead_y = 99.0
            if not record and scalar_pt < low:
                wide_pt = scalar_pt  # no jet can be harder than all the partons together: no need to cluster
            elif final:
                parts = [fastjet.PseudoJet(p.px(), p.py(), p.pz(), p.e()) for p in final]
                wide_pt = max(j.pt() for j in fastjet.ClusterSequence(parts, wide_def).inclusive_jets())
                if record or wide_pt >= low:  # else the lower bound already vetoes: skip the second clustering
                    lead = max(fastjet.ClusterSequence(parts, lead_def).inclusive_jets(), key=lambda j: j.pt())
                    lead_pt, lead_y = lead.pt(), lead.rap()
            if record:
                pthat = next((event[i].pT() for i in range(event.size()) if abs(event[i].status()) == 23), 0.0)
                self.records.append((pthat, wide_pt, lead_pt, lead_y))
                return False
            if prefilter_keeps(wide_pt, lead_pt, lead_y, cfg):
                self.in_a_row = 0
                return False
            self.prefilter_vetoed += 1
            self.in_a_row += 1
            if self.in_a_row >= PREFILTER_GIVE_UP:
                raise MaekitError(
                    f"the parton-level prefilter vetoed {self.in_a_row} events in a row: no jet gets "
                    f"near the pT window {cfg.pt_min:g}-{cfg.pt_max:g} GeV with |y| < "
                    f"{cfg.abs_y_max:g} (pTHatMin {cfg.pthat:g} GeV); check the window and --pthat-min"
                )
            return True

    return EventFilter()


def leading_jets(events, cfg: JetGenConfig) -> dict[str, Any]:
    """The leading anti-kT jet of each event of a Pythia nextBatch: its four-momentum, pT, rapidity, constituent
    indices, whether it passes the window and |y| cut (`ok`), and the visible final-state particles (`fs`)."""
    import awkward as ak
    import fastjet

    prt = events.prt
    aid = abs(prt.id)
    fs = prt[(prt.status > 0) & (aid != 12) & (aid != 14) & (aid != 16)]
    vec = ak.zip({"px": fs.p.px, "py": fs.p.py, "pz": fs.p.pz, "E": fs.p.e}, with_name="Momentum4D")
    cs = fastjet.ClusterSequence(vec, fastjet.JetDefinition(fastjet.antikt_algorithm, cfg.jet_r))
    min_pt = 0.5 * cfg.pt_min
    jets = cs.inclusive_jets(min_pt=min_pt)
    consts = cs.constituent_index(min_pt=min_pt)
    order = ak.argsort(np.sqrt(jets.px**2 + jets.py**2), axis=1, ascending=False)
    lead = jets[order]
    has = ak.to_numpy(ak.num(jets, axis=1)) > 0
    first = {k: ak.to_numpy(ak.fill_none(ak.firsts(lead[k], axis=1), 0.0)) for k in ("px", "py", "pz", "E")}
    pt = np.hypot(first["px"], first["py"])
    with np.errstate(divide="ignore", invalid="ignore"):
        rap = np.nan_to_num(0.5 * np.log((first["E"] + first["pz"]) / (first["E"] - first["pz"])), nan=99.0)
    ok = has & (pt >= cfg.pt_min) & (pt <= cfg.pt_max) & (np.abs(rap) < cfg.abs_y_max)
    return {**first, "pt": pt, "rap": rap, "ok": ok, "const": ak.firsts(consts[order], axis=1), "fs": fs}


def _class_jets(
    cfg: JetGenConfig, label: int, n: int, pythia_seed: int, rng: np.random.Generator, det: Detector
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """n accepted jets of one class: images and jet quantities, plus counts of generated events."""
    import awkward as ak

    out: dict[str, list] = {k: [] for k in ("X_jets", "pt", "m0", "eta", "phi", "n_const")}
    stats = {"events": 0, "accepted": 0, "vetoed_heavy_flavour": 0, "prefiltered": 0}
    if n == 0:
        return _stack(out, det), stats
    _quiet_fastjet_banner()
    py, hook = _make_pythia(cfg, label, pythia_seed)
    pdata = py.particleData
    charges: dict[int, float] = {}
    accepted = 0
    while accepted < n:
        # ask for about as many events as the remaining jets need (at the observed acceptance), so that the last
        # batch does not simulate many events for nothing; a function of the events so far, so still reproducible
        rate = max(accepted / stats["events"], 0.05) if stats["events"] else 0.25
        events = py.nextBatch(int(min(cfg.batch, max(10, math.ceil(1.2 * (n - accepted) / rate)))))
        stats["events"] += len(events)
        lj = leading_jets(events, cfg)
        px, pyy, pz, e, pt, fs = lj["px"], lj["py"], lj["pz"], lj["E"], lj["pt"], lj["fs"]
        take = np.flatnonzero(lj["ok"])[: n - accepted]
        last = int(take[-1]) if len(take) else -1
        if len(take):
            # the particles of all the jets taken from this batch, flattened once (awkward calls are slow one by one)
            sel = fs[take]
            bounds = np.cumsum(ak.to_numpy(ak.num(sel, axis=1)))[:-1]
            flat = {
                "px": sel.p.px,
                "py": sel.p.py,
                "pz": sel.p.pz,
                "e": sel.p.e,
                "pid": sel.id,
                "vx": ak.fill_none(sel.vProd.px, 0.0),
                "vy": ak.fill_none(sel.vProd.py, 0.0),
                "vz": ak.fill_none(sel.vProd.pz, 0.0),
            }
            flat = {k: ak.to_numpy(ak.flatten(v)) for k, v in flat.items()}
            flat["pid"] = flat["pid"].astype(np.int64)
            uniq, inv = np.unique(flat["pid"], return_inverse=True)
            for u in uniq:
                if int(u) not in charges:
                    charges[int(u)] = float(pdata.charge(int(u)))
            flat["charge"] = np.array([charges[int(u)] for u in uniq])[inv]
            per_jet = {k: np.split(v, bounds) for k, v in flat.items()}
            n_const = ak.to_numpy(ak.num(lj["const"][take], axis=1))
        for j, i in enumerate(take):
            parts = {k: v[j] for k, v in per_jet.items()}
            p3 = math.sqrt(px[i] ** 2 + pyy[i] ** 2 + pz[i] ** 2)
            jet_eta = math.asinh(pz[i] / pt[i])
            jet_phi = math.atan2(pyy[i], px[i])
            out["X_jets"].append(jet_image(parts, jet_eta, jet_phi, det, rng))
            out["pt"].append(pt[i])
            out["m0"].append(math.sqrt(max(e[i] ** 2 - p3**2, 0.0)))
            out["eta"].append(jet_eta)
            out["phi"].append(jet_phi)
            out["n_const"].append(int(n_const[j]))
            accepted += 1
        if accepted >= n:
            stats["events"] -= len(events) - (last + 1)  # events after the last jet taken do not count
        if accepted == 0 and stats["events"] >= 20000:
            raise MaekitError(
                f"no jet accepted in {stats['events']} events (pT window {cfg.pt_min:g}-{cfg.pt_max:g} GeV, "
                f"pTHatMin {cfg.pthat:g} GeV): widen the window or lower --pthat-min"
            )
    stats["accepted"] = accepted
    stats["vetoed_heavy_flavour"] = hook.vetoed_heavy_flavour
    stats["prefiltered"] = hook.prefilter_vetoed
    return _stack(out, det), stats


def _stack(out: dict[str, list], det: Detector) -> dict[str, np.ndarray]:
    res = {k: np.asarray(v, dtype=np.float32) for k, v in out.items() if k not in ("X_jets", "n_const")}
    res["X_jets"] = (
        np.stack(out["X_jets"]) if out["X_jets"] else np.zeros((0, det.size, det.size, det.channels), np.float32)
    )
    res["n_const"] = np.asarray(out["n_const"], dtype=np.int32)
    return res


def run_job(
    cfg_dict: dict[str, Any], job: tuple[int, int, int, int]
) -> tuple[int, dict[str, np.ndarray], dict[str, Any]]:
    """One job: its quark and gluon jets, shuffled together with the job's own seed. Runs in a worker process."""
    cfg = JetGenConfig(**cfg_dict)
    index, start, n_q, n_g = job
    seed_q, seed_g, rng = _job_seeds(cfg.seed, index)
    det = Detector(cfg.size, cfg.channels, cfg.smear)
    t0 = time.process_time()
    q, sq = _class_jets(cfg, QUARK, n_q, seed_q, rng, det)
    g, sg = _class_jets(cfg, GLUON, n_g, seed_g, rng, det)
    data = {k: np.concatenate([q[k], g[k]]) for k in q}
    data["y"] = np.concatenate([np.full(n_q, QUARK, np.float32), np.full(n_g, GLUON, np.float32)])
    perm = rng.permutation(n_q + n_g)
    data = {k: v[perm] for k, v in data.items()}
    return start, data, {"quark": sq, "gluon": sg, "cpu_seconds": time.process_time() - t0}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    v = {}
    for pkg in ("pythia8mc", "fastjet", "maekit"):
        try:
            v[pkg] = version(pkg)
        except PackageNotFoundError:
            v[pkg] = "unknown"
    return v


def file_attrs(cfg: JetGenConfig) -> dict[str, str]:
    """HDF5 attributes of a generated file (JSON strings; no timings, so the same call gives the same file)."""
    names = CHANNEL_NAMES[cfg.channels]
    return {
        "channel_names": json.dumps(list(names)),
        "channel_units": json.dumps({n: CHANNEL_UNITS[n] for n in names}),
        "energy_channels": json.dumps(list(ENERGY_CHANNELS[cfg.channels])),
        "layout": "X_jets (N, H, W, C) float32 channels-last, rows = eta, columns = phi, jet "
        "axis in pixel (H//2, W//2); y (N,) float32 0 = quark, 1 = gluon; pt, m0 (GeV): FastJet "
        "anti-kT jet pT and mass; eta, phi: jet axis; n_const: number of jet constituents",
        "pixel_size": json.dumps({"eta": ECAL_DETA, "phi": ECAL_DPHI}),
        "generator": json.dumps(
            {
                **asdict(cfg),
                "pthat_min": cfg.pthat,
                "pythia_quark": pythia_settings(cfg, QUARK, 0)[:-1],
                "pythia_gluon": pythia_settings(cfg, GLUON, 0)[:-1],
                "seeds": "per job from numpy SeedSequence([seed, job])",
                "versions": _versions(),
                "docs": "docs/physics.md",
            }
        ),
    }


def generate(cfg: JetGenConfig, out: str | Path, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Generate cfg.n jets into the HDF5 file `out` (written as a temporary file, then renamed).
    Returns a summary (seconds, jets/s, events generated per class)."""
    cfg.validate()
    require_physics()
    import h5py
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and out.is_dir():
        raise MaekitError(f"--out {out} is a directory; give a file name such as jets.h5")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    jobs = plan(cfg)
    t0 = time.time()
    totals = {c: {"events": 0, "accepted": 0, "vetoed_heavy_flavour": 0, "prefiltered": 0} for c in ("quark", "gluon")}
    cpu = 0.0
    h, w, c = cfg.size, cfg.size, cfg.channels
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            dsets = {
                "X_jets": f.create_dataset(
                    "X_jets",
                    (cfg.n, h, w, c),
                    np.float32,
                    chunks=(1, h, w, c),
                    compression="gzip",
                    compression_opts=4,
                    shuffle=True,
                    track_times=False,
                ),
                "y": f.create_dataset("y", (cfg.n,), np.float32, track_times=False),
                "pt": f.create_dataset("pt", (cfg.n,), np.float32, track_times=False),
                "m0": f.create_dataset("m0", (cfg.n,), np.float32, track_times=False),
                "eta": f.create_dataset("eta", (cfg.n,), np.float32, track_times=False),
                "phi": f.create_dataset("phi", (cfg.n,), np.float32, track_times=False),
                "n_const": f.create_dataset("n_const", (cfg.n,), np.int32, track_times=False),
            }
            for k, v in file_attrs(cfg).items():
                f.attrs[k] = v
            bar = tqdm(total=cfg.n, unit="jet", desc="jets", disable=None if progress else True, dynamic_ncols=True)

            pending: dict[int, dict[str, np.ndarray]] = {}
            written = 0

            def store(start: int, data: dict[str, np.ndarray], stats: dict[str, Any]) -> None:
                """Count a finished job; write finished jobs in row order (so the file's bytes do not depend
                on which worker finished first)."""
                nonlocal cpu, written
                for cls in ("quark", "gluon"):
                    for k in totals[cls]:
                        totals[cls][k] += stats[cls][k]
                cpu += stats["cpu_seconds"]
                bar.update(len(data["y"]))
                pending[start] = data
                while written in pending:
                    d = pending.pop(written)
                    m = len(d["y"])
                    for k, ds in dsets.items():
                        ds[written : written + m] = d[k]
                    written += m

            cfg_dict = asdict(cfg)
            if workers <= 1 or len(jobs) == 1:
                for job in jobs:
                    store(*run_job(cfg_dict, job))
            else:
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor, as_completed

                with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
                    futures = {ex.submit(run_job, cfg_dict, job) for job in jobs}
                    try:
                        for fut in as_completed(futures):
                            store(*fut.result())
                            futures.discard(fut)  # drop the finished job's arrays (else all jobs stay in memory)
                            del fut
                    except BaseException:
                        for fut in futures:
                            fut.cancel()
                        raise
            bar.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.time() - t0
    return {
        "out": str(out),
        "n": cfg.n,
        "channels": list(CHANNEL_NAMES[cfg.channels]),
        "workers": workers,
        "seconds": round(seconds, 2),
        "jets_per_second": round(cfg.n / seconds, 2),
        "cpu_seconds": round(cpu, 1),
        "events": {k: int(v["events"]) for k, v in totals.items()},
        "acceptance": {
            k: round(float(v["accepted"] / v["events"]), 4) if v["events"] else None for k, v in totals.items()
        },
        "vetoed_heavy_flavour": int(totals["quark"]["vetoed_heavy_flavour"]),
        "prefiltered": {k: int(v["prefiltered"]) for k, v in totals.items()},
    }
