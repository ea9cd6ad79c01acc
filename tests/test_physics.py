"""maekit jets generate (Pythia 8 + FastJet, the `maekit[physics]` extra) and the physics-aware metrics.

Physics checks on 400 generated jets (200 quark, 200 gluon; default 125 x 125 images), tolerances as stated in
docs/physics.md:
- gluon jets have more constituents and a broader radial profile than quark jets (means, > 4 standard errors);
- the image's summed pT within R = 0.4 of the centre matches the jet pT: median ratio within 2 %, >= 90 % of
  jets within 5 %;
- the image jet mass (R = 0.4) agrees with the FastJet jet mass: median ratio in [0.85, 1.0] (massless pixels
  lose the hadron masses, about -7 %), >= 75 % of jets within 25 %.
Plus the file layout, reproducibility (same seed -> same arrays, whatever the number of workers), atomic
writes and the one-line error without the extra. Detector and metric functions are checked on hand-made inputs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from maekit.cli import main
from maekit.errors import MaekitError
from maekit.physics import generate as G, metrics as M
from maekit.physics.detector import CHANNEL_NAMES, ECAL_DETA, ECAL_DPHI, HCAL_BLOCK, Detector, jet_image

try:
    import fastjet  # noqa: F401
    import pythia8mc  # noqa: F401

    HAVE_PHYSICS = True
except ImportError:  # pragma: no cover - CI installs the extra (make setup)
    HAVE_PHYSICS = False

needs_physics = pytest.mark.skipif(
    not HAVE_PHYSICS, reason="the physics extra is not installed: pip install 'maekit[physics]'"
)


@pytest.fixture(scope="session")
def qg_file(tmp_path_factory):
    from maekit.physics.generate import JetGenConfig, generate

    out = tmp_path_factory.mktemp("jets") / "qg.h5"
    summary = generate(JetGenConfig(n=400, channels=3, seed=11, chunk=100), out, workers=2, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def qg(qg_file):
    out, _ = qg_file
    with h5py.File(out, "r") as f:
        return {k: f[k][...] for k in f}, dict(f.attrs)


# ------------------------------------------------------------------ generated files


@needs_physics
def test_layout(qg_file, qg):
    data, attrs = qg
    n = 400
    assert data["X_jets"].shape == (n, 125, 125, 3) and data["X_jets"].dtype == np.float32  # channels-last
    for k in ("y", "pt", "m0"):
        assert data[k].shape == (n,) and data[k].dtype == np.float32
    assert set(np.unique(data["y"])) == {0.0, 1.0} and (data["y"] == 0).sum() == 200  # 0 quark, 1 gluon
    assert json.loads(attrs["channel_names"]) == ["tracks_pt", "ecal", "hcal"]
    gen = json.loads(attrs["generator"])
    assert gen["pt_min"] == 500 and "WeakBosonAndParton:qg2gmZq = on" in gen["pythia_quark"]
    assert ((data["pt"] >= 500) & (data["pt"] <= 550)).all()
    assert (data["X_jets"] >= 0).all()  # 3 channels: energies only
    # the jet axis is in the middle pixel: the hottest region is at the centre
    tot = data["X_jets"].sum(axis=(0, 3))
    assert np.unravel_index(tot.argmax(), tot.shape) == (62, 62)
    assert qg_file[1]["events"]["quark"] > 400 and qg_file[1]["vetoed_heavy_flavour"] > 0
    # the parton-level prefilter vetoed events early, and more than half of the fully simulated ones gave no jet
    assert all(qg_file[1]["prefiltered"][c] > 0 for c in ("quark", "gluon"))
    assert all(0.1 < qg_file[1]["acceptance"][c] < 0.6 for c in ("quark", "gluon"))


@needs_physics
def test_gluon_jets_have_more_constituents_and_are_broader(qg):
    data, _ = qg
    q, g = data["y"] == 0, data["y"] == 1
    nc = data["n_const"].astype(float)

    def separation(a, b):
        return (b.mean() - a.mean()) / math.sqrt(a.var() / len(a) + b.var() / len(b))

    assert separation(nc[q], nc[g]) > 4, (nc[q].mean(), nc[g].mean())
    x = torch.from_numpy(data["X_jets"]).permute(0, 3, 1, 2)
    girth = M.radial_moment(x, radius=0.4).numpy()
    assert separation(girth[q], girth[g]) > 4, (girth[q].mean(), girth[g].mean())


@needs_physics
def test_image_pt_and_mass_match_the_jet(qg):
    data, _ = qg
    x = torch.from_numpy(data["X_jets"]).permute(0, 3, 1, 2)
    pt_ratio = M.total_intensity(x, radius=0.4).numpy() / data["pt"]
    assert abs(np.median(pt_ratio) - 1) < 0.02, np.percentile(pt_ratio, [5, 50, 95])
    assert (np.abs(pt_ratio - 1) < 0.05).mean() >= 0.90, np.percentile(pt_ratio, [5, 50, 95])
    m_ratio = M.image_jet_mass(x, radius=0.4).numpy() / data["m0"]
    assert 0.85 <= np.median(m_ratio) <= 1.0, np.percentile(m_ratio, [10, 50, 90])
    assert (np.abs(m_ratio - 1) < 0.25).mean() >= 0.75, np.percentile(m_ratio, [10, 50, 90])


@needs_physics
def test_same_seed_same_arrays_whatever_the_workers(tmp_path):
    from maekit.physics.generate import JetGenConfig, generate

    cfg = JetGenConfig(n=6, channels=8, size=33, seed=5, chunk=3)
    generate(cfg, tmp_path / "a.h5", workers=1, progress=False)
    generate(cfg, tmp_path / "b.h5", workers=2, progress=False)
    generate(JetGenConfig(n=6, channels=8, size=33, seed=6, chunk=3), tmp_path / "c.h5", workers=1, progress=False)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b, h5py.File(tmp_path / "c.h5") as c:
        assert a["X_jets"].shape == (6, 33, 33, 8)
        assert json.loads(a.attrs["channel_names"]) == list(CHANNEL_NAMES[8])
        for k in a:
            np.testing.assert_array_equal(a[k][...], b[k][...])
        assert not np.array_equal(a["pt"][...], c["pt"][...])
        hits = a["X_jets"][..., 5:8]
        assert hits.sum() > 0 and np.array_equal(hits, np.round(hits))  # pixel-layer hit counts
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5", "c.h5"]  # no temporary files left


@needs_physics
def test_reader_reads_generated_file(qg_file):
    from maekit.config import DataConfig
    from maekit.data.loader import load_splits

    splits = load_splits(DataConfig(source="hdf5", path=str(qg_file[0])))
    assert splits.channels == 3 and splits.image_size == (125, 125)
    assert splits.channel_names == ["tracks_pt", "ecal", "hcal"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 400


@needs_physics
def test_interrupted_run_leaves_no_file(tmp_path, monkeypatch):

    real = G.run_job
    calls = []

    def failing(cfg, job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, job)

    monkeypatch.setattr(G, "run_job", failing)
    with pytest.raises(KeyboardInterrupt):
        G.generate(G.JetGenConfig(n=4, size=15, chunk=2), tmp_path / "x.h5", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_is_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pythia8mc", None)  # import pythia8mc -> ImportError
    from maekit.physics.generate import require_physics

    with pytest.raises(MaekitError, match=r"pip install 'maekit\[physics\]'"):
        require_physics()
    assert main(["jets", "generate", "--out", str(tmp_path / "x.h5"), "--n", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("maekit: error:") and "pip install 'maekit[physics]'" in err and "\n" not in err
    assert not (tmp_path / "x.h5").exists()


@needs_physics
def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "sub" / "cli.h5"
    assert (
        main(
            [
                "jets",
                "generate",
                "--out",
                str(out),
                "--n",
                "4",
                "--size",
                "15",
                "--workers",
                "1",
                "--seed",
                "2",
                "--quark-fraction",
                "0.25",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["n"] == 4 and summary["out"] == str(out) and 0 < summary["acceptance"]["gluon"] < 1
    with h5py.File(out) as f:
        assert f["X_jets"].shape == (4, 15, 15, 3) and f["y"][...].sum() == 3  # one quark jet, three gluon jets


def test_prefilter_decision():
    cfg = G.JetGenConfig(pt_min=500, pt_max=550, abs_y_max=2.0)
    low, high, dy = G.PREFILTER_LOW, G.PREFILTER_HIGH, G.PREFILTER_DY
    assert G.prefilter_keeps(500 - low, 550 + high, 2.0 + dy - 1e-6, cfg)
    assert not G.prefilter_keeps(500 - low - 1, 520, 0.0, cfg)  # the wide jet is too soft
    assert not G.prefilter_keeps(520, 550 + high + 1, 0.0, cfg)  # the leading jet is too hard
    assert not G.prefilter_keeps(520, 520, -(2.0 + dy), cfg)  # too forward


@needs_physics
def test_prefilter_record_mode_agrees_with_the_jets(tmp_path):
    """Record mode vetoes nothing and writes one row per event; the prefilter keeps the events whose leading jet
    lands in the window (a few may be lost: benchmarks/jets_prefilter.py measures how many), and vetoes most of
    the others."""
    cfg = G.JetGenConfig(pthat_min=400.0)
    py, hook = G._make_pythia(cfg, G.GLUON, 77, record=True)
    events = py.nextBatch(150)
    assert len(hook.records) == len(events) == 150
    rec = np.asarray(hook.records)
    assert (rec[:, 0] >= 400).all()  # pTHat of each event
    lj = G.leading_jets(events, cfg)
    keep = np.array([G.prefilter_keeps(w, lead, y, cfg) for _, w, lead, y in rec])
    assert lj["ok"].sum() >= 10 and keep[lj["ok"]].mean() >= 0.9
    assert keep[~lj["ok"]].mean() < 0.6
    # parton-level and final leading-jet pT agree within 10 % for most events
    assert np.median(np.abs(rec[:, 2] / np.maximum(lj["pt"], 1) - 1)) < 0.1


@needs_physics
def test_unreachable_window_stops_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "PREFILTER_GIVE_UP", 300)
    cfg = G.JetGenConfig(n=2, size=15, pt_min=3000, pt_max=3050, pthat_min=200, chunk=2)  # 3 TeV jets from pTHat 200
    with pytest.raises(MaekitError, match=r"prefilter vetoed 300 events in a row.*3000-3050 GeV"):
        G.generate(cfg, tmp_path / "x.h5", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path, capsys):
    assert main(["jets", "generate", "--out", str(tmp_path / "x.h5"), "--pt-min", "600", "--pt-max", "500"]) == 2
    assert "--pt-min" in capsys.readouterr().err
    assert main(["jets", "generate", "--out", str(tmp_path / "x.h5"), "--quark-fraction", "1.5"]) == 2
    assert "--quark-fraction" in capsys.readouterr().err


# ------------------------------------------------------------------ detector-lite imaging (no generator needed)


def _particles(rows):
    """rows of (pt, eta, phi, pid, charge[, vx, vy, vz]) -> the arrays jet_image takes (massless)."""
    out = {k: [] for k in ("px", "py", "pz", "e", "pid", "charge", "vx", "vy", "vz")}
    for r in rows:
        pt, eta, phi, pid, q = r[:5]
        v = r[5:] if len(r) > 5 else (0.0, 0.0, 0.0)
        out["px"].append(pt * math.cos(phi))
        out["py"].append(pt * math.sin(phi))
        out["pz"].append(pt * math.sinh(eta))
        out["e"].append(pt * math.cosh(eta))
        out["pid"].append(pid)
        out["charge"].append(q)
        for k, x in zip(("vx", "vy", "vz"), v):
            out[k].append(x)
    return {k: np.array(v, dtype=np.int64 if k == "pid" else np.float64) for k, v in out.items()}


def test_detector_channels_and_geometry():
    det = Detector(size=25, channels=3, smear=False)
    eta0, phi0 = 0.3 + 0.5 * ECAL_DETA, 1.0 + 0.5 * ECAL_DPHI  # middle of a crystal
    parts = _particles(
        [
            (10.0, eta0, phi0, 22, 0),  # photon on the axis -> ECAL centre
            (5.0, eta0 + 2 * ECAL_DETA, phi0, 211, 1),  # charged pion, two rows up -> tracks
            (4.0, eta0, phi0 - 3 * ECAL_DPHI, 2112, 0),  # neutron -> HCAL, spread over its 5 x 5 tower
            (7.0, eta0, phi0, 12, 0),  # neutrino: invisible
            (3.0, eta0 + 1.0, phi0, 22, 0),  # outside the 25-pixel window
        ]
    )
    img = jet_image(parts, eta0, phi0, det)
    assert img.shape == (25, 25, 3)
    assert img[12, 12, 1] == pytest.approx(10.0) and img[:, :, 1].sum() == pytest.approx(10.0)
    assert img[14, 12, 0] == pytest.approx(5.0) and img[:, :, 0].sum() == pytest.approx(5.0)
    hcal = img[:, :, 2]
    assert hcal.sum() == pytest.approx(4.0) and (hcal > 0).sum() == HCAL_BLOCK**2
    assert np.allclose(hcal[hcal > 0], 4.0 / HCAL_BLOCK**2)


def test_detector_phi_wraps_around():
    det = Detector(size=11, channels=3, smear=False)
    phi_jet = -math.pi + 0.5 * ECAL_DPHI
    img = jet_image(_particles([(2.0, 0.01, math.pi - 0.5 * ECAL_DPHI, 22, 0)]), 0.01, phi_jet, det)
    assert img[5, 4, 1] == pytest.approx(2.0)  # one crystal below the jet in phi, across the +-pi seam


def test_detector_impact_parameters_and_pixel_hits():
    det = Detector(size=41, channels=8, smear=False)
    parts = _particles(
        [
            (20.0, 0.0, 0.0, 211, 1),  # prompt track: d0 = dz = 0, hits on all three layers
            (10.0, 0.0, 0.0, 211, 1, 0.0, -2.0, 0.0),  # produced at y = -2 mm moving along +x: d0 = 2 mm
            (10.0, 0.0, 0.0, 211, -1, 80.0, 0.0, 5.0),  # produced at r = 80 mm: only the third layer (102 mm)
        ]
    )
    img = jet_image(parts, 0.0, 0.0, det)
    names = CHANNEL_NAMES[8]
    ch = {n: i for i, n in enumerate(names)}
    assert img[..., ch["tracks_pt"]].sum() == pytest.approx(40.0)
    assert img[..., ch["tracks_d0"]].sum() == pytest.approx(10.0 * 2.0)  # pT * d0
    assert img[..., ch["tracks_dz"]].sum() == pytest.approx(10.0 * 5.0)  # pT * dz of the displaced one
    assert [img[..., ch[f"bpix{k}"]].sum() for k in (1, 2, 3)] == [2, 2, 3]


def test_detector_smearing_is_seeded():
    det = Detector(size=15, channels=3, smear=True)
    parts = _particles([(50.0, 0.0, 0.0, 22, 0), (30.0, 0.0, 0.0, 130, 0)])
    a = jet_image(parts, 0.0, 0.0, det, np.random.default_rng(1))
    b = jet_image(parts, 0.0, 0.0, det, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a[..., 1].sum() != pytest.approx(50.0, abs=1e-9)
    with pytest.raises(ValueError, match="Generator"):
        jet_image(parts, 0.0, 0.0, det)


# ------------------------------------------------------------------ metrics on synthetic tensors


def _two_particles(h=21, w=21, pt1=30.0, pt2=10.0, di=3, dj=4):
    x = torch.zeros(1, 2, h, w)
    x[0, 0, h // 2, w // 2] = pt1
    x[0, 1, h // 2 + di, w // 2 + dj] = pt2
    return x


def test_image_jet_mass_of_two_massless_particles():
    x = _two_particles()
    deta, dphi = 3 * ECAL_DETA, 4 * ECAL_DPHI
    expected = math.sqrt(2 * 30.0 * 10.0 * (math.cosh(deta) - math.cos(dphi)))
    assert float(M.image_jet_mass(x)) == pytest.approx(expected, rel=1e-9)
    assert float(M.image_jet_mass(x, channels=[0])) == pytest.approx(0.0, abs=1e-9)
    assert float(M.total_intensity(x)) == pytest.approx(40.0)
    assert float(M.total_intensity(x, radius=0.05)) == pytest.approx(30.0)  # the second is 0.087 away
    assert float(M.image_jet_pt(x)) == pytest.approx(
        math.hypot(30 + 10 * math.cos(dphi), 10 * math.sin(dphi)), rel=1e-9
    )
    # boost invariance: the same pair shifted in eta has the same mass
    y = torch.roll(x, shifts=5, dims=2)
    assert float(M.image_jet_mass(y)) == pytest.approx(expected, rel=1e-9)
    assert float(M.radial_moment(x, radius=None)) == pytest.approx(10.0 * math.hypot(deta, dphi) / 40.0, rel=1e-9)


def test_mse_occupancy_and_recon_metrics():
    torch.manual_seed(0)
    orig = torch.zeros(2, 3, 8, 8)
    orig[:, 0, 2, 2] = 4.0
    orig[:, 1] = 1.0
    recon = orig.clone()
    recon[:, 2] = 2.0  # channel 2 wrong everywhere by 2
    mask = torch.zeros(2, 8, 8)
    mask[:, :4] = 1  # top half masked
    recon[:, 0][mask.bool()] += 1.0  # channel 0 wrong by 1 on masked pixels only
    np.testing.assert_allclose(M.per_channel_mse(orig, recon, mask).numpy(), [1.0, 0.0, 4.0])
    np.testing.assert_allclose(M.per_channel_mse(orig, recon).numpy(), [0.5, 0.0, 4.0])
    occ = M.occupancy(orig)
    np.testing.assert_allclose(occ[0].numpy(), [1 / 64, 1.0, 0.0])
    r = M.recon_metrics(orig, recon, mask, energy_channels=[0, 1], channel_names=["a", "b", "c"])
    assert r["mse_masked"] == {"a": 1.0, "b": 0.0, "c": 4.0} and r["mse_all"]["a"] == 0.5
    # energy channels a, b: original sum 4 + 64 = 68; pasted recon adds 1 on 32 masked pixels of channel a
    assert r["total_intensity"]["rel_residual"]["mean"] == pytest.approx(32 / 68)
    assert r["occupancy"]["original"]["c"] == 0.0 and r["occupancy"]["recon"]["c"] == 0.5  # visible pixels pasted back
    same = M.recon_metrics(orig, orig, mask)
    assert (
        same["jet_mass"]["rel_residual"]["mean_abs"] == 0.0
        and same["total_intensity"]["rel_residual"]["mean_abs"] == 0.0
    )
    with pytest.raises(ValueError, match="mask"):
        M.per_channel_mse(orig, recon, torch.zeros(2, 4, 4))
    # an image that is one pixel (a one-photon jet) has mass 0: no relative mass residual for it, and it is counted
    one = torch.zeros(2, 1, 9, 9)
    one[0, 0, 4, 4] = 500.0
    one[1, 0, 3:6, 3:6] = 50.0
    spread = one.clone()
    spread[0, 0, 4, 3:6] = 200.0  # the one-pixel image reconstructed with a spread: mass from 0 to about 17 GeV
    r = M.recon_metrics(one, spread, torch.ones(2, 9, 9))
    assert r["jet_mass"]["left_out_massless"] == 1 and r["jet_mass"]["rel_residual"]["n"] == 1
    assert r["jet_mass"]["rel_residual"]["mean_abs"] == 0.0 and r["total_intensity"]["rel_residual"]["n"] == 2


def test_channel_panels_png(tmp_path):
    orig = torch.zeros(2, 3, 16, 16)
    orig[:, 0, 8, 8], orig[:, 1, 4:6, 4:6] = 5.0, 0.3
    orig[:, 2, 3, 3] = -2.0  # a signed channel (impact parameter): symmetric log scale
    mask = torch.zeros(2, 16, 16)
    mask[:, :8] = 1
    out = tmp_path / "panels.png"
    M.channel_panels(orig, mask, orig * 0.9, out, ["tracks_pt", "ecal", "tracks_d0"], "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_accumulate_over_batches():
    torch.manual_seed(1)
    orig = torch.rand(6, 3, 10, 10) * (torch.rand(6, 3, 10, 10) > 0.7)
    recon = orig + 0.1 * torch.randn_like(orig)
    mask = (torch.rand(6, 10, 10) > 0.5).float()
    whole = M.recon_metrics(orig, recon, mask, energy_channels=[0, 2])
    acc = M.ReconMetrics(energy_channels=[0, 2])
    acc.update(orig[:4], recon[:4], mask[:4])
    acc.update(orig[4:], recon[4:], mask[4:])
    parts = acc.result()
    assert parts["mse_masked"] == pytest.approx(whole["mse_masked"]) and parts["mse_all"] == pytest.approx(
        whole["mse_all"]
    )
    assert parts["jet_mass"]["rel_residual"]["mean"] == pytest.approx(whole["jet_mass"]["rel_residual"]["mean"])
    assert parts["occupancy"]["recon"] == pytest.approx(whole["occupancy"]["recon"])
    assert M.energy_channels_of(["Tracks", "ECAL", "HCAL"], 3) == [0, 1, 2]
    assert M.energy_channels_of(list(CHANNEL_NAMES[8]), 8) == [0, 3, 4]
    assert M.energy_channels_of(None, 8) == [0, 3, 4] and M.energy_channels_of(None, 2) == [0, 1]


@needs_physics
def test_reconstruct_reports_physics_metrics_for_detector_data(tmp_path, capsys):
    from types import SimpleNamespace

    from maekit.commands.reconstruct import is_detector_data
    from maekit.physics.generate import JetGenConfig, generate

    from conftest import TINY

    h5 = tmp_path / "jets8.h5"
    generate(JetGenConfig(n=40, channels=8, size=25, seed=2, chunk=20), h5, workers=1, progress=False)
    pre = tmp_path / "pre"
    small = [
        *TINY,
        "model.patch_size=5",
        "train.batch_size=8",
        "train.eval_samples=8",
        "train.progress=false",
        "train.epochs=1",
    ]
    assert (
        main(["pretrain", f"out={pre}", "data.source=hdf5", f"data.path={h5}", "data.preprocess.log1p=true", *small])
        == 0
    )
    capsys.readouterr()
    assert main(["reconstruct", str(pre), "--n", "3"]) == 0
    printed = capsys.readouterr().out
    assert "image jet mass (tracks_pt+ecal+hcal)" in printed and "occupancy" in printed
    line = json.loads((pre / "reconstruct.jsonl").read_text().splitlines()[-1])
    ph = line["physics"]
    assert ph["channels"] == list(CHANNEL_NAMES[8]) and ph["energy_channels"] == ["tracks_pt", "ecal", "hcal"]
    assert set(ph["mse_masked"]) == set(CHANNEL_NAMES[8]) and all(v >= 0 for v in ph["mse_all"].values())
    assert ph["total_intensity"]["original_mean"] > 100  # GeV: log1p undone
    assert ph["jet_mass"]["rel_residual"]["n"] == ph["images"]
    assert (pre / Path(ph["panels"]).name).read_bytes()[:4] == b"\x89PNG"
    assert main(["reconstruct", str(pre), "--hit-decoding", "sample"]) == 2  # plain MSE has no hit map to sample
    assert "--hit-decoding sample applies to model.loss=hit_intensity; this run's model.loss is mse" in (
        capsys.readouterr().err
    )
    assert not is_detector_data(SimpleNamespace(dtype="uint8", channels=3))  # photos: no physics metrics
    assert not is_detector_data(SimpleNamespace(dtype="float32", channels=1))


def test_hit_intensity_objective_end_to_end(tmp_path, capsys):
    """Pretrain sparse jet images with model.loss=hit_intensity: the empty level comes from the data and is kept in
    the checkpoint, reconstruct reports physics metrics from it, the export holds the encoder only (a ViTMAEModel
    that transformers loads without missing weights) and the encoder serves downstream."""
    from transformers import ViTMAEModel

    from maekit.runs import load_run

    import formats
    from conftest import TINY

    h5 = tmp_path / "jets.h5"
    formats.write_qg_hdf5(h5, n=40, size=20)
    data = ["data.source=hdf5", f"data.path={h5}", "data.preprocess.log1p=true", "data.preprocess.zero_suppress=0.001"]
    small = [
        *TINY,
        "model.patch_size=5",
        "train.batch_size=8",
        "train.eval_samples=8",
        "train.progress=false",
        "train.epochs=1",
    ]
    pre = tmp_path / "pre"
    assert main(["pretrain", f"out={pre}", *data, *small, "model.loss=hit_intensity"]) == 0
    run = load_run(pre)
    mean, std = run.mean, run.std
    assert run.model_cfg.loss == "hit_intensity" and run.model_cfg.empty_level == pytest.approx((-mean / std).tolist())
    capsys.readouterr()
    assert main(["reconstruct", str(pre), "--n", "2"]) == 0
    line = json.loads((pre / "reconstruct.jsonl").read_text().splitlines()[-1])
    ph = line["physics"]
    assert ph["jet_mass"]["rel_residual"]["n"] == ph["images"] and line["hit_decoding"] == "top"
    # sampled hits: recorded, their own picture, the same numbers for the same seed
    for _ in range(2):
        assert main(["reconstruct", str(pre), "--n", "2", "--hit-decoding", "sample", "--seed", "3"]) == 0
    first, second = (json.loads(x) for x in (pre / "reconstruct.jsonl").read_text().splitlines()[-2:])
    assert first["hit_decoding"] == "sample" and first["grid"].endswith("_seed3_sampled.png")
    assert first["physics"]["total_intensity"] == second["physics"]["total_intensity"]
    assert main(["reconstruct", str(pre), "--hit-decoding", "mean"]) == 2
    assert "--hit-decoding must be one of top, sample, calibrated, got 'mean'" in capsys.readouterr().err
    # the calibrated decoding: refused until fitted, then fitted on the validation split and used as recorded
    assert main(["reconstruct", str(pre), "--hit-decoding", "calibrated"]) == 2
    assert f"{pre / 'hit_calibration.json'}: no such file; fit it first with `maekit calibrate {pre}`" in (
        capsys.readouterr().err
    )
    assert main(["calibrate", str(pre)]) == 0
    fitted = json.loads((pre / "hit_calibration.json").read_text())
    assert fitted["fitted_on"]["split"] == "val" and len(fitted["intensity_scale"]) == 3 and len(fitted["grid"]) == 11
    best = min(fitted["grid"], key=lambda r: abs(r["jet_mass"]["mean"]))
    assert fitted["temperature"] == best["temperature"]
    assert main(["reconstruct", str(pre), "--n", "2", "--hit-decoding", "calibrated"]) == 0
    line = json.loads((pre / "reconstruct.jsonl").read_text().splitlines()[-1])
    assert line["grid"].endswith("_seed0_calibrated.png") and line["split"] == "test"
    assert line["calibration"] == {k: fitted[k] for k in ("temperature", "intensity_scale")}
    assert main(["compress", str(pre), "--limit", "4", "--mask-ratios", "0.5", "--hit-decoding", "calibrated"]) == 0
    packed = json.loads((pre / "compress_test" / "compress.json").read_text())
    assert packed["hit_decoding"] == "calibrated" and packed["calibration"] == line["calibration"]
    # the Python API reads the same file: its calibrated reconstruction differs from top's in the hits' intensities
    import maekit

    with h5py.File(h5, "r") as f:
        some = np.log1p(np.where(f["X_jets"][:4] < 1e-3, 0.0, f["X_jets"][:4])).astype(np.float32)
    api_run = maekit.load(pre)
    top, calibrated = (api_run.reconstruct(some, hit_decoding=d)["reconstruction"] for d in ("top", "calibrated"))
    assert top.shape == calibrated.shape == (4, 3, 20, 20) and not np.allclose(top, calibrated)
    assert main(["export", str(pre), str(tmp_path / "hf")]) == 0
    assert "exported the encoder of" in capsys.readouterr().out
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["ViTMAEModel"]
    enc, info = ViTMAEModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert main(["knn", f"pretrained={pre}", f"out={tmp_path / 'knn'}", *data, "train.progress=false", "knn_k=3"]) == 0
    # with the intensity's variance, on jets whose second channel is signed (an impact parameter, as in the 8-channel
    # sets): both kept in the checkpoint, and sampled pictures repeat with their seed
    with h5py.File(h5, "r") as f:
        x, y = f["X_jets"][:], f["y"][:]
    x[..., 1] *= np.where(np.random.default_rng(0).random(x.shape[:-1]) < 0.5, -1.0, 1.0).astype(np.float32)
    signed = tmp_path / "signed.h5"
    with h5py.File(signed, "w") as f:
        f.create_dataset("X_jets", data=x)
        f.create_dataset("y", data=y)
    data = [*data[:1], f"data.path={signed}", *data[2:]]
    var = tmp_path / "var"
    assert main(["pretrain", f"out={var}", *data, *small, "model.loss=hit_intensity", "model.hit_variance=true"]) == 0
    assert load_run(var).model_cfg.hit_variance and load_run(var).model_cfg.signed_channels == [False, True, False]
    assert run.model_cfg.signed_channels == [False, False, False]
    for _ in range(2):
        assert main(["reconstruct", str(var), "--n", "2", "--hit-decoding", "sample", "--seed", "3"]) == 0
    first, second = (json.loads(x) for x in (var / "reconstruct.jsonl").read_text().splitlines()[-2:])
    assert first["physics"]["total_intensity"] == second["physics"]["total_intensity"]


def test_calibrated_intensity_scales_match_the_masked_energy_in_file_units():
    """fit_scales (commands/calibrate.py) solves, per channel, for the factor on the hits' distance from the empty
    level at which the decoded masked energy equals the original's, in the file's units (log1p and scale undone);
    decoding with those factors (MAE.hit_pixels) must then give that energy back, whatever the temperature. A signed
    channel keeps factor 1."""
    from maekit.commands.calibrate import fit_scales
    from maekit.config import DataConfig, PreprocessConfig
    from maekit.data.loader import undo_preprocess
    from maekit.data.transforms import normalize
    from maekit.models.mae import MAE, HitDecoding, ModelConfig
    from maekit.runs import fixed_noise, hit_generator

    torch.manual_seed(0)
    raw = torch.where(torch.rand(24, 2, 20, 20) < 0.05, torch.rand(24, 2, 20, 20) * 30.0, torch.zeros(()))
    data_cfg = DataConfig(preprocess=PreprocessConfig(log1p=True, scale=[1.0, 0.5]))
    pre = data_cfg.preprocess
    images = torch.log1p(raw * torch.tensor([1.0, 0.5]).view(1, 2, 1, 1))
    mean, std = images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))
    cfg = ModelConfig(img_size=[20, 20], in_chans=2, patch_size=5, embed_dim=32, depth=1, num_heads=2,
                      decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, loss="hit_intensity",
                      empty_level=(-mean / std).tolist())  # fmt: skip
    model = MAE(cfg).eval()
    with torch.no_grad():  # a model that predicts hits at ~10 % of pixels with varied intensities
        model.decoder_pred.bias[: 5 * 5 * 2] = -2.0  # the hit logits come first, then the intensities
        model.decoder_pred.bias[5 * 5 * 2 :] = 1.0
    noise = fixed_noise(len(images), model.num_patches, 0)
    for t in (0.0, 0.7):
        scales = fit_scales(model, images, mean, std, noise, 0.75, data_cfg, t, seed=0, batch_size=8)
        assert all(s != 1.0 and 0.125 < s < 8.0 for s in scales), scales  # inside the search range
        x = normalize(images, mean, std)
        with torch.no_grad():
            _, pred, mask = model(x, 0.75, noise=noise)
            recon = model.predictions_to_pixels(x, pred, mask, HitDecoding("top", t, scales), hit_generator(0))
        m = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, 50))[:, :1] > 0
        s_ = std.view(1, -1, 1, 1)
        empty = model.empty_level.view(1, -1, 1, 1)
        want = undo_preprocess((x - empty) * s_ * m, pre).abs().sum(dim=(0, 2, 3))
        got = undo_preprocess((recon - empty) * s_ * m, pre).abs().sum(dim=(0, 2, 3))
        assert torch.allclose(got, want, rtol=1e-4), (t, got, want)
    model.signed[1] = 1.0  # a signed channel keeps its values: no magnitude to calibrate
    signed = fit_scales(model, images, mean, std, noise, 0.75, data_cfg, 0.7, seed=0, batch_size=8)
    assert signed == (scales[0], 1.0)


def test_mean_image_baseline_of_identical_images_is_exact(tmp_path):
    """When every image is the same, the training mean image pasted into the masked patches reconstructs each image
    exactly: zero residuals and the original occupancy (the baseline's arithmetic, known answer)."""
    from maekit.commands.reconstruct import mean_image, physics_metrics
    from maekit.config import DataConfig
    from maekit.models.mae import MAE, ModelConfig

    img = torch.zeros(3, 20, 20)
    img[0, 8:10, 9] = 5.0
    img[1, 10, 10:12] = 20.0
    img[2, 9:12, 9:12] = 2.0
    data = img.expand(6, -1, -1, -1).clone()
    cfg = ModelConfig(
        img_size=[20, 20],
        in_chans=3,
        patch_size=5,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    model = MAE(cfg).eval()
    mean, std = torch.zeros(3), torch.ones(3)
    noise = torch.rand(6, 16, generator=torch.Generator().manual_seed(0))
    ph = physics_metrics(
        model,
        data,
        mean,
        std,
        noise,
        0.75,
        DataConfig(),
        ["tracks_pt", "ecal", "hcal"],
        tmp_path / "p.png",
        "t",
        2,
        mean_image(data, batch=4),
    )
    base = ph["mean_image"]
    assert base["total_intensity"]["rel_residual"]["mean_abs"] == pytest.approx(0.0, abs=1e-6)
    assert base["jet_mass"]["rel_residual"]["mean_abs"] == pytest.approx(0.0, abs=1e-6)
    assert base["occupancy"]["recon"] == pytest.approx(base["occupancy"]["original"])
    assert all(v == pytest.approx(0.0, abs=1e-10) for v in base["mse_masked"].values())
    # empty pixels that come back from normalisation as 1e-9 are not hits: occupancy counts values above the
    # zero-suppression threshold
    from maekit.config import PreprocessConfig

    ph = physics_metrics(
        model,
        data,
        mean,
        std,
        noise,
        0.75,
        DataConfig(preprocess=PreprocessConfig(zero_suppress=1e-3)),
        ["tracks_pt", "ecal", "hcal"],
        tmp_path / "q.png",
        "t",
        2,
        mean_image(data) + 1e-9,
    )
    assert ph["mean_image"]["occupancy"]["recon"] == pytest.approx(ph["mean_image"]["occupancy"]["original"])
