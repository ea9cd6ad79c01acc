"""What the generator's cuts cost in jets: the PhaseSpace:pTHatMin bound and the parton-level prefilter.

Generates events per class with a low pTHatMin and the prefilter in record mode (it vetoes nothing and writes down
the parton-level jets of every event), finds which events give a leading jet in the window, and reports, for each
pTHatMin and each set of prefilter margins, the fraction of those jets that would be lost and the fraction of
events that would be simulated to the end. The numbers are in docs/physics.md.

    .venv/bin/python benchmarks/jets_prefilter.py --events 30000 --out benchmarks/runs/jets_prefilter

Resumable: each class's records are saved to OUT/{quark,gluon}.npz when done; a second run reuses them.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from maekit.physics import generate as G

PTHATS = (300, 325, 350, 375, 400, 425, 450)
MARGINS = [  # (low, high, dy): keep if R=0.6 jet pT >= pt_min - low, R=0.4 jet pT <= pt_max + high, |y| < y_max + dy
    (40, 50, 0.3),
    (30, 40, 0.2),
    (20, 30, 0.2),
    (15, 25, 0.1),
    (10, 20, 0.1),
]


def run_class(label: int, events: int, pthat: float, seed: int, out: Path) -> str:
    path = out / f"{'quark' if label == G.QUARK else 'gluon'}.npz"
    if path.exists():
        return str(path)
    cfg = G.JetGenConfig(pthat_min=pthat)
    G._quiet_fastjet_banner()
    py, hook = G._make_pythia(cfg, label, seed, record=True)
    rows, t0 = [], time.process_time()
    done = seen = skipped = 0
    while done < events:
        batch = py.nextBatch(min(250, events - done))
        hook_rows, seen = hook.records[seen:], len(hook.records)
        if len(hook_rows) != len(batch):  # Pythia retried an event's parton level: the rows cannot be matched
            skipped += len(batch)
            continue
        lj = G.leading_jets(batch, cfg)
        rows.append(np.c_[np.asarray(hook_rows), lj["pt"], lj["rap"]])
        done += len(batch)
        print(f"label {label}: {done}/{events} events", flush=True)
    np.savez(path, rows=np.concatenate(rows), cpu_seconds=time.process_time() - t0, skipped=skipped)
    return str(path)


def analyse(out: Path, cfg: G.JetGenConfig) -> dict:
    res: dict = {"pthat_reference": None, "classes": {}}
    for name in ("quark", "gluon"):
        z = np.load(out / f"{name}.npz")
        pthat, wide, lead, lead_y, pt, rap = z["rows"].T
        acc = (pt >= cfg.pt_min) & (pt <= cfg.pt_max) & (np.abs(rap) < cfg.abs_y_max)
        c = {
            "events": len(pt),
            "jets_in_window": int(acc.sum()),
            "cpu_ms_per_event_unfiltered": round(1000 * float(z["cpu_seconds"]) / len(pt), 2),
            "pthat": {},
            "prefilter": {},
        }
        for cut in PTHATS:
            kept = pthat >= cut
            c["pthat"][cut] = {
                "jets_lost_pct": round(100 * float((acc & ~kept).sum() / acc.sum()), 2),
                "events_pct": round(100 * float(kept.mean()), 1),
            }
        base = pthat >= cfg.pthat
        for low, high, dy in MARGINS:
            keep = np.array([G.prefilter_keeps(w, j, y, cfg, low, high, dy) for w, j, y in zip(wide, lead, lead_y)])
            lost = acc & base & ~keep
            c["prefilter"][f"{low}/{high}/{dy}"] = {
                "jets_lost_pct": round(100 * float(lost.sum() / (acc & base).sum()), 2),
                "jets_lost": int(lost.sum()),
                "events_simulated_pct": round(100 * float((keep & base).sum() / base.sum()), 1),
                "acceptance_of_simulated_pct": round(100 * float((acc & keep & base).sum() / (keep & base).sum()), 1),
            }
        res["classes"][name] = c
    res["pthat_reference"] = float(cfg.pthat)
    return res


def to_markdown(res: dict, events_pthat: float) -> str:
    q, g = res["classes"]["quark"], res["classes"]["gluon"]
    lines = [
        f"Events generated with pTHatMin {events_pthat:g} GeV: {q['events']} quark, {g['events']} gluon; "
        f"jets in the window: {q['jets_in_window']} quark, {g['jets_in_window']} gluon.",
        "",
        "| pTHatMin (GeV) | quark jets lost % | gluon jets lost % | events kept % (quark / gluon) |",
        "|---|---|---|---|",
    ]
    for cut in PTHATS:
        lines.append(
            f"| {cut} | {q['pthat'][cut]['jets_lost_pct']} | {g['pthat'][cut]['jets_lost_pct']} | "
            f"{q['pthat'][cut]['events_pct']} / {g['pthat'][cut]['events_pct']} |"
        )
    lines += [
        "",
        f"Prefilter at {G.PREFILTER_SCALE:g} GeV, with pTHatMin {res['pthat_reference']:g} GeV (margins: "
        "R = 0.6 jet pT >= pt-min - low, R = 0.4 jet pT <= pt-max + high, |y| < abs-y-max + dy):",
        "",
        "| low / high / dy | quark jets lost % | gluon jets lost % | events "
        "simulated to the end % (quark / gluon) | of which in the window % |",
        "|---|---|---|---|---|",
    ]
    for k in q["prefilter"]:
        a, b = q["prefilter"][k], g["prefilter"][k]
        lines.append(
            f"| {k} | {a['jets_lost_pct']} ({a['jets_lost']}) | {b['jets_lost_pct']} "
            f"({b['jets_lost']}) | {a['events_simulated_pct']} / {b['events_simulated_pct']} "
            f"| {a['acceptance_of_simulated_pct']} / {b['acceptance_of_simulated_pct']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30000, help="events per class")
    ap.add_argument("--pthat-min", type=float, default=300.0, help="pTHatMin of the generated events (the reference)")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--out", default="benchmarks/runs/jets_prefilter")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(2) as ex:
        futs = [
            ex.submit(run_class, label, args.events, args.pthat_min, args.seed + label, out)
            for label in (G.QUARK, G.GLUON)
        ]
        for f in futs:
            f.result()
    res = analyse(out, G.JetGenConfig())
    (out / "prefilter.json").write_text(json.dumps(res, indent=1))
    md = to_markdown(res, args.pthat_min)
    (out / "prefilter.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
