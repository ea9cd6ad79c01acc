"""Command line: `maekit <command> ...` -> commands.<command>.run(...). No logic of its own."""
from __future__ import annotations

import argparse
import sys
import traceback

from .errors import MaekitError
from .version import __version__


def _config_command(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_ + " Overrides are key.sub=value (values parsed as YAML).")
    p.add_argument("-c", "--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="maekit", description="Masked-autoencoder pretraining of ViTs, and honest downstream evaluation.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--version", action="version", version=f"maekit {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    _config_command(sub, "pretrain", "Pretrain a ViT-MAE.")
    _config_command(sub, "linprobe", "Linear probe of a frozen encoder (pretrained=RUN_DIR, HF_DIR or none).")
    _config_command(sub, "finetune", "Fine-tune a whole encoder (pretrained=RUN_DIR or HF_DIR, or none for the from-scratch baseline).")
    _config_command(sub, "knn", "Weighted k-NN on encoder features (pretrained=RUN_DIR, HF_DIR or none).")
    _config_command(sub, "compare", "Pretrained vs from-scratch: every method, label budget and seed; tables and plots.")
    r = sub.add_parser("reconstruct", help="Reconstruction grid and loss of a run's best checkpoint.")
    r.add_argument("run_dir")
    r.add_argument("--split", default="test", choices=["train", "val", "test"])
    r.add_argument("--n", type=int, default=8, help="images in the grid")
    r.add_argument("--mask-ratio", type=float, default=None, help="default: the run's mask ratio")
    r.add_argument("--seed", type=int, default=0, help="seed of the fixed masks")
    r.add_argument("--limit", type=int, default=None, help="use only the first N images of the split for the loss")
    r.add_argument("--out", default=None, help="grid PNG path (default: in the run directory)")
    x = sub.add_parser(
        "export", help="Write a run's best checkpoint as a Hugging Face transformers ViTMAE directory.",
        description="Write a run's best checkpoint as a Hugging Face transformers ViTMAE directory: config.json, "
        "model.safetensors, preprocessor_config.json (load with ViTMAEForPreTraining / ViTMAEModel / ViTImageProcessor "
        ".from_pretrained). Square images only. Usage: maekit export RUN_DIR [--format hf] OUT_DIR (options anywhere). "
        "OUT_DIR must be new, empty, or a previous maekit export (which is replaced).",
    )
    x.add_argument("run_dir", metavar="RUN_DIR", help="maekit run directory (or a Hugging Face ViTMAE directory)")
    x.add_argument("out_dir", metavar="OUT_DIR", help="directory to write")
    x.add_argument("--format", default="hf", choices=["hf"], help="hf: transformers ViTMAE (the only format, the default)")
    e = sub.add_parser(
        "embed", help="Encoder features of a data split as a .npy file (plus labels).",
        description="Encoder features [N, D] (float32 .npy, every patch visible) of a split, and <stem>_labels.npy when "
        "the data have labels. RUN_DIR is a maekit run or a Hugging Face ViTMAE directory; the data are the run's own "
        "(its saved data config) with data.key=value overrides on top (required for a Hugging Face directory without "
        "maekit metadata). Write the overrides right after RUN_DIR; options go before RUN_DIR or after the overrides.",
    )
    e.add_argument("run_dir", help="maekit run directory or Hugging Face ViTMAE directory")
    e.add_argument("overrides", nargs="*", metavar="data.key=value")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--pool", default="mean", choices=["mean", "cls"], help="mean of the patch tokens (default) or the cls token")
    e.add_argument("--out", default=None, help="features .npy path (default: features_<split>_<pool>.npy in the run "
                   "directory; in the current directory for a Hugging Face directory)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    w = sub.add_parser(
        "sweep", help="Pretrain every cell of a grid of config values (then optionally evaluate each); tables and figures.",
        description="Pretrain every cell of a grid (e.g. --grid model.patch_size=2,4 model.mask_ratio=0.75,0.85), each in "
        "its own run directory under the sweep directory (out=DIR), optionally followed by downstream evaluations; writes "
        "sweep.csv, sweep.md, heatmaps, overlaid loss curves and reconstructions. Running it again skips finished cells and "
        "resumes an interrupted one. Write key=value overrides right after -c CONFIG (downstream ones as knn.labels=600); "
        "a --grid item with one value is an override too.",
    )
    w.add_argument("-c", "--config", help="YAML pretraining config (optional sections linprobe:, finetune:, knn:)")
    w.add_argument("overrides", nargs="*", metavar="key.sub=value")
    w.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2", help="config key and its comma-separated values")
    w.add_argument("--then", default="", metavar="linprobe,finetune,knn", help="evaluations to run on every cell after pretraining")
    rp = sub.add_parser(
        "report", help="One self-contained report.html for a run, compare or sweep directory.",
        description="Write DIR/report.html: configuration, environment, loss curves, reconstructions, result tables, "
        "confusion matrices and plots of a run, compare or sweep directory (images embedded; no network needed to view it).",
    )
    rp.add_argument("dir", metavar="DIR")
    rp.add_argument("--out", default=None, help="HTML path (default: DIR/report.html)")
    d = sub.add_parser("data", help="Inspect or preview a data source (idx/CIFAR/image folder, .npy/.npz, HDF5, Parquet); pack an image folder.")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("inspect", help="Format, shapes, dtype, channel layout, label balance, per-channel statistics and sparsity.",
                         description="Format, shapes, dtype, channel layout, label balance, per-channel statistics and sparsity. "
                         "Data options as key=value (the keys of the config's data: section, e.g. images_key=jet layout=nhwc).")
    dp = dsub.add_parser("preview", help="A PNG grid of samples; one panel per channel for multi-channel data.")
    for q in (di, dp):
        q.add_argument("path", metavar="PATH", help="data file or folder (source guessed from it; override with source=...)")
        q.add_argument("overrides", nargs="*", metavar="key=value", help="data options, e.g. images_key=X_jets channels=[0,1]")
    di.add_argument("--limit", type=int, default=10000, help="images used for the statistics (evenly spread; default 10000)")
    di.add_argument("--json", action="store_true", help="print JSON")
    dp.add_argument("--out", required=True, help="PNG file to write")
    dp.add_argument("--n", type=int, default=8, help="samples to show")
    dp.add_argument("--log", action="store_true", help="log colour scale (sparse detector images)")
    dk = dsub.add_parser(
        "pack", help="Decode an image folder once into a chunked uint8 HDF5 file that pretraining streams (data.pack).",
        description="Decode every image of FOLDER (class subfolders or any tree, as data.source=folder reads it) exactly as "
        "the folder reader does at data.image_size=SIZE, in a process pool, into OUT (images uint8 [N, C, SIZE, SIZE], labels, "
        "class names, the folder's fingerprint). Unreadable files are skipped and listed. An interrupted pack resumes when "
        "run again; OUT appears only when complete. Then pretrain with data.source=folder data.path=FOLDER data.pack=OUT.",
    )
    dk.add_argument("folder", metavar="FOLDER", help="image folder")
    dk.add_argument("--out", required=True, help="HDF5 file to write (.h5)")
    dk.add_argument("--size", type=int, required=True, help="image size: shorter side resized, then center-cropped (data.image_size)")
    dk.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    dk.add_argument("--color", default="auto", choices=["auto", "L", "RGB"], help="as data.color (default auto)")
    dk.add_argument("--force", action="store_true", help="re-pack when OUT holds another size or an older state of the folder")
    from .commands import jets

    jets.add_parser(sub)
    z = sub.add_parser("compress", help="The MAE as a lossy codec for detector images: bytes and physics fidelity vs raw and sparse storage.",
                       description="Encode images to float16 latent tokens (+ visible-patch indices) at several mask ratios, decode them, "
                       "and compare bytes per image and physics fidelity with raw float32 and a zero-suppressed sparse encoding. "
                       "Writes compress.json and compress.md.")
    z.add_argument("run_dir", metavar="RUN_DIR", help="maekit pretraining run on float detector images")
    z.add_argument("--data", default=None, help="data file (same format and preprocessing as the run's; default: the run's own)")
    z.add_argument("--split", default="test", choices=["train", "val", "test"])
    z.add_argument("--mask-ratios", default="0,0.5,0.75,0.9", help="comma-separated (default 0,0.5,0.75,0.9)")
    z.add_argument("--limit", type=int, default=2000, help="images (default 2000)")
    z.add_argument("--seed", type=int, default=0, help="seed of the masks")
    z.add_argument("--out", default=None, help="output folder (default RUN_DIR/compress_<split>)")
    return ap


def _config_run(args) -> None:
    """pretrain / linprobe / finetune / knn / compare: YAML + overrides -> the same function as the Python API."""
    from .api import run_command

    run_command(args.command, args.config, args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("pretrain", "linprobe", "finetune", "knn", "compare"):
            _config_run(args)
        elif args.command == "reconstruct":
            from .commands import reconstruct

            reconstruct.run(args.run_dir, args.split, args.n, args.mask_ratio, args.seed, args.limit, args.out)
        elif args.command == "export":
            from .commands import export

            export.run(args.run_dir, args.out_dir, args.format)
        elif args.command == "sweep":
            from .commands import sweep

            sweep.run(args.config, args.grid, args.overrides, [m.strip() for m in args.then.split(",") if m.strip()])
        elif args.command == "report":
            from .commands import report

            print(f"report: {report.run(args.dir, args.out)}")
        elif args.command == "data":
            from .commands import data

            if args.data_command == "inspect":
                data.inspect(args.path, args.overrides, args.limit, args.json)
            elif args.data_command == "pack":
                data.pack_folder(args.folder, args.out, args.size, args.workers, args.color, args.force)
            else:
                data.preview(args.path, args.overrides, args.out, args.n, args.log)
        elif args.command == "compress":
            from .commands import compress

            try:
                ratios = tuple(float(v) for v in args.mask_ratios.split(",") if v.strip())
            except ValueError:
                raise MaekitError(f"--mask-ratios must be comma-separated numbers, got {args.mask_ratios!r}") from None
            compress.run(args.run_dir, args.data, args.split, ratios, args.limit, args.seed, args.out)
        elif args.command == "jets":
            from .commands import jets

            jets.run(args)
        elif args.command == "embed":
            from .commands import embed

            embed.run(args.run_dir, args.split, args.pool, args.out, args.overrides, args.batch_size, args.device, args.threads)
        return 0
    except MaekitError as e:
        from .engine.train import Interrupted

        if isinstance(e, Interrupted):
            print(f"maekit: {e}", file=sys.stderr)
            return 130
        if args.debug:
            traceback.print_exc()
        print(f"maekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
