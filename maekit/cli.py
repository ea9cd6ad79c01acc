"""Command line: `maekit <command> ...` -> commands.<command>.run(...). No logic of its own."""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from .errors import MaekitError


def _config_command(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_ + " Overrides are key.sub=value (values parsed as YAML).")
    p.add_argument("-c", "--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="maekit", description="Masked-autoencoder pretraining of ViTs, and honest downstream evaluation.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)
    _config_command(sub, "pretrain", "Pretrain a ViT-MAE.")
    _config_command(sub, "linprobe", "Linear probe of a frozen encoder (pretrained=RUN_DIR or none).")
    _config_command(sub, "finetune", "Fine-tune a whole encoder (pretrained=RUN_DIR, or none for the from-scratch baseline).")
    _config_command(sub, "knn", "Weighted k-NN on encoder features (pretrained=RUN_DIR or none).")
    _config_command(sub, "compare", "Pretrained vs from-scratch: every method, label budget and seed; tables and plots.")
    r = sub.add_parser("reconstruct", help="Reconstruction grid and loss of a run's best checkpoint.")
    r.add_argument("run_dir")
    r.add_argument("--split", default="test", choices=["train", "val", "test"])
    r.add_argument("--n", type=int, default=8, help="images in the grid")
    r.add_argument("--mask-ratio", type=float, default=None, help="default: the run's mask ratio")
    r.add_argument("--seed", type=int, default=0, help="seed of the fixed masks")
    r.add_argument("--limit", type=int, default=None, help="use only the first N images of the split for the loss")
    r.add_argument("--out", default=None, help="grid PNG path (default: in the run directory)")
    return ap


def _config_run(args) -> None:
    """pretrain / linprobe / finetune / knn / compare: YAML + overrides -> config -> commands.<name>.run."""
    from .config import CompareConfig, FinetuneConfig, KnnConfig, LinprobeConfig, PretrainConfig, apply_overrides, from_dict, read_yaml
    from .engine.rundir import default_out

    cls = {"pretrain": PretrainConfig, "linprobe": LinprobeConfig, "finetune": FinetuneConfig, "knn": KnnConfig, "compare": CompareConfig}[args.command]
    data = read_yaml(args.config) if args.config else {}
    data = apply_overrides(data, args.overrides)
    out = Path(data["out"]) if data.get("out") else default_out(args.config, args.command)
    saved = out / "config.yaml"
    if data.get("resume") and saved.exists() and args.command != "compare":
        # a resumed run keeps its own configuration; only the command-line overrides apply on top
        # (stop_after belongs to the invocation that set it, not to the run)
        data = apply_overrides(read_yaml(saved), ["train.stop_after=0", "resume=true", *args.overrides])
    cfg = from_dict(cls, data)
    cfg.validate()
    module = __import__(f"maekit.commands.{args.command}", fromlist=["run"])
    module.run(cfg, out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("pretrain", "linprobe", "finetune", "knn", "compare"):
            _config_run(args)
        elif args.command == "reconstruct":
            from .commands import reconstruct

            reconstruct.run(args.run_dir, args.split, args.n, args.mask_ratio, args.seed, args.limit, args.out)
        return 0
    except MaekitError as e:
        if args.debug:
            traceback.print_exc()
        print(f"maekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
