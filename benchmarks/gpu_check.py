"""maekit's CUDA paths, checked in one script under 8 minutes on one GPU; writes docs/results/gpu_check.json and
docs/gpu.md from it (`--doc-only` rewrites the doc from the JSON).

    python benchmarks/gpu_check.py --data DIR      # on a CUDA machine; DIR holds the Fashion-MNIST idx files
    .venv/bin/python benchmarks/gpu_check.py --smoke   # the script itself on CPU, tiny sizes (its doc: OUT/gpu.md)

Steps, each timed; a step that fails is recorded with its error and the others still run:
  1. the environment, and whether bf16 is native on this GPU (then `train.precision: auto` times a trial step);
  2. training-step throughput against transformers' ViTMAEForPreTraining at identical architecture, weights and
     batch (configs (a) and (c) of docs/performance.md), fp32 and bf16 autocast, plus maekit's partial decoding;
  3. `maekit pretrain -c configs/fashion_mnist_long.yaml` (the comparison's pretraining recipe, ~30 min on 2 CPU cores),
     precision auto (its timed trial's choice and speed-up recorded);
  4. `maekit finetune` of that encoder with 600 labels (the recipe of configs/compare_fashion_mnist.yaml,
     learning rate as chosen there on the validation split), one test evaluation;
  5. `torchrun --nproc_per_node=1 maekit pretrain` (torchrun's launcher and environment; with one process maekit
     forms no process group): stopped after 40 steps with a checkpoint, then resumed to the end of its epoch;
  6. a 1-process NCCL group: maekit's all-reduce of host tensors, a DDP-wrapped MAE step, the reconstruction loss
     inside the group (`--only collectives` reruns this step alone into the saved results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DOC = ROOT / "docs/gpu.md"
RESULT = ROOT / "docs/results/gpu_check.json"  # what the doc is written from (kept in the repo)
# the first run on an H200, at commit 0264eb1, when `auto` picked bf16 on any GPU with it (no timed trial yet)
BEFORE_TRIAL = ROOT / "docs/results/gpu_check_before_trial.json"
CONFIGS = ("a", "c")
GPU_BATCH = {"a": 256, "c": 64}  # larger than the CPU batches of docs/performance.md: a GPU needs work per launch
FINETUNE = [  # configs/compare_fashion_mnist.yaml's fine-tune recipe (base_lr: its validation-chosen 1.6e-2)
    "labels=600",
    "pool=mean",
    "label_smoothing=0.1",
    "patch_dropout=0.5",
    "model.drop_path=0.1",
    "optim.base_lr=1.6e-2",
    "optim.layer_decay=0.75",
    "optim.weight_decay=0.05",
    "optim.warmup_epochs=5",
    "optim.min_lr=1.0e-6",
    "train.epochs=100",
    "train.batch_size=64",
    "train.eval_every=10",
    "train.eval_samples=2000",
]
SMOKE_MODEL = [  # --smoke: a tiny model on a few thousand images, so the script's own logic runs in a minute on CPU
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.decoder_embed_dim=32",
    "model.decoder_depth=1",
    "model.decoder_num_heads=2",
    "data.val_fraction=0.95",
]


def maekit(args: list[str], timeout: float, log: Path, launcher: list[str] | None = None) -> float:
    """Run one maekit command as a user would (a subprocess), its output to `log`; its wall time in seconds."""
    cmd = [*(launcher or [sys.executable, "-m"]), "maekit", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    with log.open("w") as f:
        f.write("+ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode:
        tail = log.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"exit status {proc.returncode}: {' | '.join(tail)}")
    return time.perf_counter() - t


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def environment(device: torch.device) -> dict:
    from maekit.engine.train import resolve_precision

    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "auto_precision": resolve_precision("auto", device),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            memory_gib=p.total_memory / 2**30,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(key: str, device: torch.device, smoke: bool) -> dict:
    """Images/s of whole training steps (forward, backward, AdamW) for maekit, transformers and maekit with partial
    decoding, each in fp32 and bf16 autocast; contenders alternate, median of 3 timed repeats after a warm-up."""
    from throughput import CONFIGS as ALL, PARTIAL_KEEP, build

    from maekit.models.mae import MAE

    cfg = dict(ALL[key], batch=4 if smoke else GPU_BATCH[key])
    torch.manual_seed(0)
    ours, hf, mcfg = build(cfg)
    partial = MAE(dataclasses.replace(mcfg, decoder_keep=PARTIAL_KEEP))
    partial.load_state_dict(ours.state_dict())
    models = {"maekit": ours, "transformers": hf, "maekit partial": partial}
    for m in models.values():
        m.to(device).train()
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}
    x = torch.randn(cfg["batch"], cfg["chans"], cfg["img"], cfg["img"], device=device)
    steps = 1 if smoke else 10
    out: dict = {"title": cfg["title"], "batch": cfg["batch"], "steps_per_repeat": steps}
    # on a CPU without native bf16 (the --smoke check) bf16 is emulated and ~100x slower: fp32 only
    for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
        ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else None

        def step(name: str) -> None:
            with ctx() if ctx else torch.autocast(device.type, enabled=False):
                loss = models[name](pixel_values=x).loss if name == "transformers" else models[name](x)[0]
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()

        for name in models:  # warm-up (kernel selection, allocator)
            for _ in range(2):
                step(name)
        times: dict[str, list[float]] = {n: [] for n in models}
        for _ in range(3):
            for name in models:
                sync(device)
                t = time.perf_counter()
                for _ in range(steps):
                    step(name)
                sync(device)
                times[name].append(cfg["batch"] * steps / (time.perf_counter() - t))
        med = {n: statistics.median(v) for n, v in times.items()}
        out[precision] = {
            "img_s": med,
            "ratio": med["maekit"] / med["transformers"],
            "partial_ratio": med["maekit partial"] / med["transformers"],
        }
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def pretraining(out: Path, data: list[str], smoke: bool, timeout: float) -> dict:
    run = out / "pretrain"
    extra = [*SMOKE_MODEL, "train.epochs=1", "train.eval_samples=200"] if smoke else []
    wall = maekit(
        ["pretrain", "-c", "configs/fashion_mnist_long.yaml", *data, "train.progress=false", *extra, f"out={run}"],
        timeout,
        out / "pretrain.log",
    )
    info = json.loads((run / "run.json").read_text())
    rows = metrics(run)
    epochs = [r for r in rows if "img_per_s" in r]
    last = [r for r in rows if "test_recon_loss" in r][-1]
    note = re.search(r"steps/epoch, (.*?)(, resuming at step \d+)?$", (out / "pretrain.log").read_text(), re.M)
    return {
        "wall_s": wall,
        "precision": info.get("precision"),
        "precision_note": note.group(1) if note else None,
        "gpu": info.get("env", {}).get("gpu"),
        "epochs": len(epochs),
        "img_per_s": statistics.median(r["img_per_s"] for r in epochs),
        "train_time_s": sum(r["epoch_time_s"] for r in epochs),
        "train_recon_loss": last["train_recon_loss"],
        "test_recon_loss": last["test_recon_loss"],
    }


def finetuning(out: Path, data: list[str], smoke: bool, timeout: float) -> dict:
    run = out / "finetune"
    extra = ["labels=100", "train.epochs=2", "train.eval_every=1", "train.eval_samples=200"] if smoke else []
    wall = maekit(
        ["finetune", f"pretrained={out / 'pretrain'}", *data, *FINETUNE, "train.progress=false", *extra, f"out={run}"],
        timeout,
        out / "finetune.log",
    )
    res = json.loads((run / "result.json").read_text())
    info = json.loads((run / "run.json").read_text())
    return {
        "wall_s": wall,
        "precision": info.get("precision"),
        "labels": res.get("labels"),
        "val_accuracy": res.get("val_accuracy"),
        "test_accuracy": res["test_accuracy"],
        "test_images": res.get("test_images"),
    }


def torchrun(out: Path, data: list[str], smoke: bool, timeout: float) -> dict:
    run = out / "torchrun"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m"]
    extra = SMOKE_MODEL if smoke else []
    args = ["pretrain", "-c", "configs/fashion_mnist_long.yaml", *data, "train.epochs=1", "train.progress=false"]
    args += [*extra, "train.eval_samples=200", f"out={run}"]
    first = maekit([*args, f"train.stop_after={4 if smoke else 40}"], timeout / 2, out / "torchrun_stop.log", launcher)
    second = maekit([*args, "resume=true"], timeout / 2, out / "torchrun_resume.log", launcher)
    info = json.loads((run / "run.json").read_text())
    rows = metrics(run)
    resumed = re.search(r"resuming at step (\d+)", (out / "torchrun_resume.log").read_text())
    return {
        "wall_s": first + second,
        "world_size": info.get("world_size"),
        "precision": info.get("precision"),
        "stopped_at_step": int(resumed.group(1)) if resumed else None,
        "resumed": bool(resumed),
        "gpu": info.get("env", {}).get("gpu"),
        "final_step": max(r["step"] for r in rows if "step" in r),
        "test_recon_loss": [r for r in rows if "test_recon_loss" in r][-1]["test_recon_loss"],
    }


COLLECTIVES = """
import json, sys, torch, torch.distributed as td
from torch.nn.parallel import DistributedDataParallel as DDP
from maekit.engine.dist import DistInfo, all_reduce_sum
from maekit.models.mae import MAE, ModelConfig
from maekit.runs import recon_loss
cuda = torch.cuda.is_available()
device = torch.device("cuda", 0) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(device)
td.init_process_group("nccl" if cuda else "gloo", init_method="tcp://127.0.0.1:" + sys.argv[1], rank=0, world_size=1)
host = torch.tensor([1.5, 2.0], dtype=torch.float64)
total = all_reduce_sum(host)  # maekit's host-side totals: train loss, reconstruction loss sums
torch.manual_seed(0)
mae = MAE(ModelConfig(img_size=[28, 28], in_chans=1, patch_size=4, embed_dim=64, depth=2, num_heads=4,
                      decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)).to(device)
ddp = DDP(mae)
x = torch.randn(8, 1, 28, 28, device=device)
loss = ddp(x)[0]
loss.backward()
images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
noise = torch.rand(16, 49, generator=torch.Generator().manual_seed(0))
one, zero = torch.ones(1), torch.zeros(1)
alone = recon_loss(mae.eval(), images, zero, one * 255, noise)
shared = recon_loss(mae, images, zero, one * 255, noise, dist=DistInfo(0, 1, 0, device))
try:  # what maekit did before: a plain all_reduce of the host tensor
    td.all_reduce(host.clone())
    plain = "accepted"
except Exception as e:
    plain = type(e).__name__ + ": " + str(e).splitlines()[0][:160]
reduced_ok = bool(total.device == host.device and torch.equal(total, host))
stepped_ok = bool(torch.isfinite(loss).item() and all(p.grad is not None for p in mae.parameters() if p.requires_grad))
print(json.dumps({"backend": td.get_backend(), "plain_all_reduce_of_host_tensor": plain,
    "all_reduce_sum_ok": reduced_ok, "ddp_step_ok": stepped_ok, "recon_loss_alone": alone,
    "recon_loss_in_group": shared}))
td.destroy_process_group()
"""


def collectives(out: Path) -> dict:
    """A 1-process NCCL group (gloo on CPU): maekit's all-reduce of host-side totals, a DDP-wrapped MAE step and the
    process-group path of the reconstruction loss. One GPU cannot hold a 2-process NCCL group, so this is what one
    GPU can check of the multi-GPU code."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", COLLECTIVES, "29533"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    (out / "collectives.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"exit status {proc.returncode}: {' | '.join(proc.stderr.strip().splitlines()[-3:])}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if not (res["all_reduce_sum_ok"] and res["ddp_step_ok"] and res["recon_loss_alone"] == res["recon_loss_in_group"]):
        raise RuntimeError(f"wrong result: {res}")
    return res


def write_doc(res: dict, doc: Path = DOC) -> None:
    env = res["environment"]
    steps = res["steps"]
    lines = [
        "# maekit on a CUDA GPU",
        "",
        "Generated by `python benchmarks/gpu_check.py --data DIR` on a machine with one CUDA GPU "
        f"({res['date']}; `--doc-only` rewrites it from docs/results/gpu_check.json). It checks maekit's CUDA "
        "paths end to end: `train.precision: auto`, the training step against transformers, pretraining, "
        "fine-tuning and a 1-process torchrun. CI has no GPU, so these paths are checked only when this "
        "script runs.",
        "",
        f"GPU: {env.get('gpu', '-')} (compute capability {env.get('capability', '-')}, "
        f"{env.get('memory_gib', float('nan')):.0f} GiB); torch {env['torch']} (CUDA {env['cuda']}), transformers "
        f"{env['transformers']}, Python {env['python']}, {env['cpu_count']} CPU cores. The GPU machine's own "
        "packages were used (its torch is not the project's pinned CPU wheel). bf16 is "
        f"{'native' if env['auto_precision'] == 'bf16' else 'not native'} there"
        + (
            ", so `train.precision: auto` times a forward and backward in fp32 and in bf16 at the start of each "
            "run and keeps bf16 only if it is faster."
            if env["auto_precision"] == "bf16"
            else "."
        ),
        f"Whole script: {res['total_s'] / 60:.1f} min." if "total_s" in res else "",
        "",
        "| step | result | wall (s) |",
        "|---|---|---:|",
    ]
    for name, s in steps.items():
        result = "passed" if s.get("ok") else "FAILED: " + s.get("error", "?")
        lines.append(f"| {name} | {result}{' (run alone, `--only`)' if s.get('alone') else ''} | {s['s']:.0f} |")
    old = json.loads(BEFORE_TRIAL.read_text())["steps"] if BEFORE_TRIAL.exists() else {}  # the first run's steps
    tp = [(k, steps[f"throughput ({k})"]) for k in CONFIGS if steps.get(f"throughput ({k})", {}).get("ok")]
    if tp:
        lines += [
            "",
            "## Training step against transformers' ViTMAEForPreTraining",
            "",
            "Same architecture, weights, batch and mask ratio, SDPA attention in both, AdamW; images/s of whole "
            "steps (forward, backward, optimiser), median of 3 repeats after a warm-up, contenders alternating. "
            "Partial: `model.decoder_keep: 0.25` (CrossMAE's partial reconstruction). Random input tensors: "
            "the data pipeline is not in these numbers (it is in the pretraining row below).",
            "",
            "| config | batch | precision | maekit img/s | transformers img/s | ratio | maekit partial img/s | ratio |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for k, s in tp:
            for p in ("fp32", "bf16"):
                if p not in s["result"]:
                    continue
                r = s["result"][p]
                lines.append(
                    f"| ({k}) {s['result']['title']} | {s['result']['batch']} | {p} | {r['img_s']['maekit']:,.0f} "
                    f"| {r['img_s']['transformers']:,.0f} | {r['ratio']:.2f}x | {r['img_s']['maekit partial']:,.0f} "
                    f"| {r['partial_ratio']:.2f}x |"
                )
        pairs = [
            (f"({k}) {p}", old[f"throughput ({k})"]["result"][p]["ratio"], s["result"][p]["ratio"])
            for k, s in tp
            if old.get(f"throughput ({k})", {}).get("ok")
            for p in ("fp32", "bf16")
            if p in s["result"]  # --smoke on CPU times fp32 only
        ]
        if pairs:
            spread = max(abs(a - b) for _, a, b in pairs)
            lines += [
                "",
                "The first run of this script (commit 0264eb1) measured maekit / transformers at "
                f"{', '.join(f'{n} {a:.2f}x' for n, a, _ in pairs)}: single runs of this table differ by up to "
                f"{spread:.2f}x, so read each ratio to about that.",
            ]
    pre, ft, tr = steps.get("pretrain", {}), steps.get("finetune", {}), steps.get("torchrun", {})
    if pre.get("ok"):
        p = pre["result"]
        lines += [
            "",
            "## Pretraining and fine-tuning (Fashion-MNIST, one seed)",
            "",
            f"- `maekit pretrain -c configs/fashion_mnist_long.yaml`, {p['epochs']} epochs, precision "
            f"{p.get('precision_note') or p['precision']}: {p['train_time_s']:.0f} s of training "
            f"({p['wall_s']:.0f} s with start-up and "
            f"evaluations), a median of {p['img_per_s']:,.0f} images/s; test reconstruction loss "
            f"{p['test_recon_loss']:.4f} (train {p['train_recon_loss']:.4f}).",
        ]
        before = old.get("pretrain", {})
        if before.get("ok") and before["result"]["precision"] != p["precision"]:
            o = before["result"]
            lines.append(
                f"- The same pretraining in {o['precision']} (the first run of this script, at commit 0264eb1, when "
                f"`auto` picked bf16 on every GPU that has it): {o['train_time_s']:.0f} s of training, a median of "
                f"{o['img_per_s']:,.0f} images/s, test reconstruction loss {o['test_recon_loss']:.4f}. The timed "
                f"trial's choice trains {o['train_time_s'] / p['train_time_s']:.2f}x as fast."
            )
        if ft.get("ok"):
            f = ft["result"]
            lines.append(
                f"- `maekit finetune` of that encoder with {f['labels']} labels (configs/compare_fashion_mnist.yaml's "
                f"recipe, precision {f['precision']}): {f['wall_s']:.0f} s; validation accuracy "
                f"{100 * f['val_accuracy']:.2f} %, test accuracy {100 * f['test_accuracy']:.2f} % on "
                f"{f['test_images']:,} images. One seed: docs/results/fashion_mnist.md has the 3-seed comparison "
                "made on CPU."
            )
    co = steps.get("collectives", {})
    if co.get("ok"):
        c = co["result"]
        lines += [
            "",
            "## Process-group collectives, one process",
            "",
            f"A 1-process `{c['backend']}` group (one GPU cannot hold two NCCL ranks): maekit's all-reduce of "
            "host-side totals (the logged train loss, the reconstruction-loss sums) returns them unchanged on the "
            "host; a DDP-wrapped MAE takes a step with every gradient set; the reconstruction loss inside the group "
            f"equals the one outside it ({c['recon_loss_in_group']:.6f} and {c['recon_loss_alone']:.6f}). A plain "
            f"`all_reduce` of the host tensor, as maekit did before it sent them through the GPU: "
            f"{c.get('plain_all_reduce_of_host_tensor', 'not tried')}.",
        ]
    if tr.get("ok"):
        t = tr["result"]
        lines += [
            "",
            "## torchrun, one process",
            "",
            f"`torchrun --standalone --nproc_per_node=1 -m maekit pretrain ...`: world size {t['world_size']} (one "
            "process forms no process group: the section above checks what one GPU can of the NCCL paths), "
            f"precision {t['precision']}; stopped at step {t['stopped_at_step']} with a checkpoint, "
            f"{'resumed from it' if t['resumed'] else 'NOT resumed'} to step {t['final_step']} (test reconstruction "
            f"loss {t['test_recon_loss']:.4f}), {t['wall_s']:.0f} s in all, on {t['gpu'] or 'the CPU'}.",
        ]
    doc.write_text("\n".join(lines) + "\n")
    print(f"wrote {doc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="folder with the Fashion-MNIST idx files (default: maekit's own search)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/runs/gpu_check"), help="run folder")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device; the doc goes to OUT/gpu.md")
    ap.add_argument("--only", choices=["collectives"], help="run this step alone, merged into the saved results")
    ap.add_argument("--doc-only", action="store_true", help="rewrite docs/gpu.md from docs/results/gpu_check.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.doc_only:
        write_doc(json.loads(RESULT.read_text()))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        sys.exit("gpu_check: no CUDA device here (use --smoke to check the script on CPU)")
    out.mkdir(parents=True, exist_ok=True)
    data = [f"data.path={args.data}"] if args.data else []
    t0 = time.perf_counter()
    res: dict = {"date": time.strftime("%Y-%m-%d"), "environment": environment(device), "steps": {}}
    print(json.dumps(res["environment"]), flush=True)
    plan = {
        **{f"throughput ({k})": (lambda k=k: throughput(k, device, args.smoke)) for k in CONFIGS},
        "pretrain": lambda: pretraining(out, data, args.smoke, 240),
        "finetune": lambda: finetuning(out, data, args.smoke, 120),
        "torchrun": lambda: torchrun(out, data, args.smoke, 120),
        "collectives": lambda: collectives(out),
    }
    if args.only:  # one step again, merged into the last full run's results
        res = json.loads(RESULT.read_text()) if RESULT.exists() and not args.smoke else res
        plan = {args.only: plan[args.only]}
    for name, fn in plan.items():
        t = time.perf_counter()
        try:
            step = {"ok": True, "result": fn()}
        except Exception as e:  # recorded, and the remaining steps still run
            traceback.print_exc()
            step = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        step["s"] = time.perf_counter() - t
        if args.only:
            step["alone"] = True
        res["steps"][name] = step
        print(f"{name}: {json.dumps(step)}", flush=True)
    if not args.only:
        res["total_s"] = time.perf_counter() - t0
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    if not args.smoke:
        RESULT.write_text(json.dumps(res, indent=1))
    write_doc(res, out / "gpu.md" if args.smoke else DOC)
    if not all(s["ok"] for s in res["steps"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
