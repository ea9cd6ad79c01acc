"""The command line of each command: one module per command, each with `add_parser(sub)`, which registers the command
and its arguments on the top-level subparsers and returns its parser, and `run(args)`, which runs it from the parsed
arguments. They import only the standard library at the top and the command's work inside `run`, so that building the
parser (`maekit --help`, `maekit pretrain --help`) never imports torch. maekit/cli.py registers them in this order."""

from . import (
    calibrate,
    compare,
    compress,
    data,
    embed,
    export,
    finetune,
    jets,
    knn,
    linprobe,
    pretrain,
    reconstruct,
    report,
    sweep,
)

COMMANDS = (
    pretrain,
    linprobe,
    finetune,
    knn,
    compare,
    reconstruct,
    export,
    embed,
    sweep,
    report,
    data,
    jets,
    compress,
    calibrate,
)
