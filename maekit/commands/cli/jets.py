"""maekit jets generate: simulated quark/gluon jet images (Pythia 8 + FastJet + detector-lite imaging) in the
ML4SCI quark/gluon HDF5 layout. Physics and approximations: docs/physics.md; the work: physics/generate.py (this command
has no commands/jets.py: its command line calls the physics library directly)."""

from __future__ import annotations

import argparse
import json
import os

from ...errors import MaekitError


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `jets generate` on the top-level subparsers."""
    j = sub.add_parser(
        "jets", help="Simulated quark/gluon jet images (needs the extra: pip install 'maekit[physics]')."
    )
    jsub = j.add_subparsers(dest="jets_command", required=True)
    g = jsub.add_parser(
        "generate",
        help="Pythia 8 Z+jet events -> quark/gluon jet images in the ML4SCI quark/gluon HDF5 layout.",
        description="pp -> Z(->nu nu) + jet at 14 TeV (quark jets from q g -> Z q, q = u, d, s; gluon jets "
        "from q qbar -> Z g), anti-kT R = 0.4 (FastJet), leading jet in the pT window with |y| < 2, "
        "detector-lite images centred on the jet (3 channels: tracks pT, ECAL, HCAL; 8: + track d0, dz, three "
        "pixel layers). Writes X_jets (N, H, W, C) float32 channels-last, y (0 quark, 1 gluon), pt, m0, eta, "
        "phi, n_const. Same settings and seed -> same file, whatever --workers. See docs/physics.md.",
    )
    g.add_argument("--out", required=True, help="HDF5 file to write (atomically: temporary file, then rename)")
    g.add_argument("--n", type=int, default=1000, help="number of jets (default 1000)")
    g.add_argument(
        "--channels", type=int, default=3, choices=[3, 8], help="3: tracks, ECAL, HCAL; 8: + d0, dz, pixel layers"
    )
    g.add_argument("--pt-min", type=float, default=500.0, help="leading-jet pT window, GeV (default 500-550)")
    g.add_argument("--pt-max", type=float, default=550.0)
    g.add_argument("--abs-y-max", type=float, default=2.0, help="leading-jet |rapidity| cut (default 2)")
    g.add_argument("--quark-fraction", type=float, default=0.5, help="fraction of quark jets (default 0.5)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    g.add_argument("--size", type=int, default=125, help="image pixels per side, odd (default 125)")
    g.add_argument(
        "--pthat-min", type=float, default=None, help="Pythia PhaseSpace:pTHatMin, GeV (default: pt-min - 175)"
    )
    g.add_argument(
        "--no-prefilter",
        action="store_true",
        help="generate every event to the end (about 5x slower; by default events whose parton-level jet is far "
        "from the window are vetoed early, losing about 1%% of the jets: docs/physics.md)",
    )
    g.add_argument("--no-smearing", action="store_true", help="no detector resolutions (exact deposits)")
    g.add_argument("--chunk", type=int, default=200, help="jets per job (default 200; the file depends on it)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return j


def run(args: argparse.Namespace) -> dict:
    from ...physics.generate import JetGenConfig, generate

    if args.jets_command != "generate":  # pragma: no cover - argparse enforces the choice
        raise MaekitError(f"unknown jets command {args.jets_command!r}")
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise MaekitError(f"--workers must be >= 1, got {workers}")
    cfg = JetGenConfig(
        n=args.n,
        channels=args.channels,
        size=args.size,
        pt_min=args.pt_min,
        pt_max=args.pt_max,
        abs_y_max=args.abs_y_max,
        seed=args.seed,
        quark_fraction=args.quark_fraction,
        pthat_min=args.pthat_min,
        prefilter=not args.no_prefilter,
        smear=not args.no_smearing,
        chunk=args.chunk,
    )
    summary = generate(cfg, args.out, workers=workers, progress=not args.no_progress)
    print(json.dumps(summary))
    print(
        f"{summary['n']} jets in {summary['seconds']:.1f} s "
        f"({summary['jets_per_second']:.1f} jets/s, {workers} workers): {summary['out']}"
    )
    return summary
