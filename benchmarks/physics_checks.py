"""The physics checks of tests/test_physics.py on any file written by `maekit jets generate` (numbers for
docs/physics.md). Usage: python benchmarks/physics_checks.py FILE.h5 [--limit N]"""

from __future__ import annotations

import argparse
import json
import math

import h5py
import numpy as np
import torch

from maekit.physics import metrics as M


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=500)
    a = ap.parse_args()
    with h5py.File(a.file, "r") as f:
        n = len(f["y"]) if a.limit is None else min(a.limit, len(f["y"]))
        y, pt, m0, nc = (f[k][:n] for k in ("y", "pt", "m0", "n_const"))
        energy = json.loads(f.attrs["energy_channels"])
        ti, jm, girth = [], [], []
        for i in range(0, n, a.batch):
            x = torch.from_numpy(f["X_jets"][i : min(i + a.batch, n)]).permute(0, 3, 1, 2)
            ti.append(M.total_intensity(x, energy, radius=0.4))
            jm.append(M.image_jet_mass(x, energy, radius=0.4))
            girth.append(M.radial_moment(x, energy, radius=0.4))
    ti, jm, girth = (torch.cat(v).numpy() for v in (ti, jm, girth))
    q, g = y == 0, y == 1

    def sep(v):
        a_, b_ = v[q].astype(float), v[g].astype(float)
        return (b_.mean() - a_.mean()) / math.sqrt(a_.var() / len(a_) + b_.var() / len(b_))

    pr = ti / pt
    massive = m0 > 0  # a jet of one massless particle (e.g. a hard photon) has mass 0: no ratio
    mr = jm[massive] / m0[massive]
    out = {
        "jets": int(n),
        "quark": int(q.sum()),
        "gluon": int(g.sum()),
        "n_const_mean": {
            "quark": round(float(nc[q].mean()), 2),
            "gluon": round(float(nc[g].mean()), 2),
            "separation_sigma": round(float(sep(nc)), 1),
        },
        "girth_mean": {
            "quark": round(float(girth[q].mean()), 4),
            "gluon": round(float(girth[g].mean()), 4),
            "separation_sigma": round(float(sep(girth)), 1),
        },
        "image_pt_over_jet_pt": {
            "median": round(float(np.median(pr)), 4),
            "p5_p95": np.percentile(pr, [5, 95]).round(4).tolist(),
            "within_5pct": round(float((np.abs(pr - 1) < 0.05).mean()), 4),
        },
        "image_mass_over_jet_mass": {
            "median": round(float(np.median(mr)), 4),
            "p10_p90": np.percentile(mr, [10, 90]).round(4).tolist(),
            "within_25pct": round(float((np.abs(mr - 1) < 0.25).mean()), 4),
            "massless_jets_left_out": int((~massive).sum()),
        },
        "jet_mass_mean": {"quark": round(float(m0[q].mean()), 2), "gluon": round(float(m0[g].mean()), 2)},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
