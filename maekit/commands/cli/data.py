"""maekit data inspect|preview|pack: the command line of commands/data.py."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser(
        "data",
        help="Inspect or preview a data source (idx/CIFAR/image "
        "folder, .npy/.npz, HDF5, Parquet); pack an image folder.",
    )
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser(
        "inspect",
        help="Format, shapes, dtype, channel layout, label balance, per-channel statistics and sparsity.",
        description="Format, shapes, dtype, channel layout, label balance, per-channel statistics and sparsity. "
        "Data options as key=value (the keys of the config's data: section, e.g. images_key=jet layout=nhwc).",
    )
    dp = dsub.add_parser("preview", help="A PNG grid of samples; one panel per channel for multi-channel data.")
    for q in (di, dp):
        q.add_argument(
            "path", metavar="PATH", help="data file or folder (source guessed from it; override with source=...)"
        )
        q.add_argument(
            "overrides", nargs="*", metavar="key=value", help="data options, e.g. images_key=X_jets channels=[0,1]"
        )
    di.add_argument(
        "--limit", type=int, default=10000, help="images used for the statistics (evenly spread; default 10000)"
    )
    di.add_argument("--json", action="store_true", help="print JSON")
    dp.add_argument("--out", required=True, help="PNG file to write")
    dp.add_argument("--n", type=int, default=8, help="samples to show")
    dp.add_argument("--log", action="store_true", help="log colour scale (sparse detector images)")
    dk = dsub.add_parser(
        "pack",
        help="Decode an image folder once into a chunked uint8 HDF5 file that pretraining streams (data.pack).",
        description="Decode every image of FOLDER (class subfolders or any tree, as data.source=folder "
        "reads it) exactly as the folder reader does at data.image_size=SIZE, in a process pool, into OUT "
        "(images uint8 [N, C, SIZE, SIZE], labels, class names, the folder's fingerprint). Unreadable "
        "files are skipped and listed. An interrupted pack resumes when run again; OUT appears only when "
        "complete. Then pretrain with data.source=folder data.path=FOLDER data.pack=OUT.",
    )
    dk.add_argument("folder", metavar="FOLDER", help="image folder")
    dk.add_argument("--out", required=True, help="HDF5 file to write (.h5)")
    dk.add_argument(
        "--size",
        type=int,
        required=True,
        help="image size: shorter side resized, then center-cropped (data.image_size)",
    )
    dk.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    dk.add_argument("--color", default="auto", choices=["auto", "L", "RGB"], help="as data.color (default auto)")
    dk.add_argument(
        "--force", action="store_true", help="re-pack when OUT holds another size or an older state of the folder"
    )
    return d


def run(args: argparse.Namespace) -> None:
    from .. import data

    if args.data_command == "inspect":
        data.inspect(args.path, args.overrides, args.limit, args.json)
    elif args.data_command == "pack":
        data.pack_folder(args.folder, args.out, args.size, args.workers, args.color, args.force)
    else:
        data.preview(args.path, args.overrides, args.out, args.n, args.log)
