"""DistributedDataParallel on CPU (gloo) launched by torchrun: 2 processes with per-process batch B give the
same losses as 1 process with batch 2B, and the replicas stay identical."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from maekit.engine import checkpoint

from conftest import TINY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return (
        [r["train_loss"] for r in rows if "train_loss" in r],
        [r["val_recon_loss"] for r in rows if "val_recon_loss" in r],
        rows,
    )


def test_two_processes_match_one(tmp_path, fmnist_small):
    common = [
        f"data.path={fmnist_small}",
        *TINY,
        "train.eval_samples=64",
        "train.progress=false",
        "train.log_every=1",
        "train.epochs=1",
        "train.threads=1",
        "train.recon_every=5",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    r1 = subprocess.run(
        [sys.executable, "-m", "maekit", "pretrain", f"out={one}", "train.batch_size=64", *common],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--nnodes=1",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            "-m",
            "maekit",
            "pretrain",
            f"out={two}",
            "train.batch_size=32",
            *common,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    l1, v1, _ = losses(one)
    l2, v2, rows2 = losses(two)
    assert len(l1) == len(l2) == 8
    assert l1 == pytest.approx(l2, rel=1e-4, abs=1e-5)
    assert v1 == pytest.approx(v2, rel=1e-4)
    assert [r["ddp_param_max_diff"] for r in rows2 if "ddp_param_max_diff" in r] == [0.0]
    assert json.loads((two / "run.json").read_text())["effective_batch"] == 64
    a, _ = checkpoint.load(one / "checkpoints" / "last.safetensors")
    b, _ = checkpoint.load(two / "checkpoints" / "last.safetensors")
    for k in a:
        if k.startswith("model."):
            assert torch.allclose(a[k], b[k], atol=1e-4), k
    # only rank 0 wrote: one set of outputs, and the single-process loader reads the DDP checkpoint
    assert len(list((two / "tensorboard").glob("events.*"))) == 1
    # a run started with 2 processes and resumed with 1 (same effective batch) ends where the 1-process run did
    part = tmp_path / "part"
    r3 = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--nnodes=1",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            "-m",
            "maekit",
            "pretrain",
            f"out={part}",
            "train.batch_size=32",
            "train.stop_after=3",
            *common,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r3.returncode == 0, r3.stderr[-3000:]
    r4 = subprocess.run(
        [sys.executable, "-m", "maekit", "pretrain", f"out={part}", "resume=true", "train.batch_size=64", *common],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r4.returncode == 0, r4.stderr[-3000:]
    # linear probe and k-NN: the processes share the feature extraction and give the single-process result
    for cmd in ("linprobe", "knn"):
        args = [
            cmd,
            f"pretrained={one}",
            f"data.path={fmnist_small}",
            "labels=200",
            "train.epochs=2",
            "train.batch_size=32",
            "train.progress=false",
            "train.threads=1",
        ]
        r5 = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node=2",
                "--nnodes=1",
                "--master_addr=127.0.0.1",
                f"--master_port={free_port()}",
                "-m",
                "maekit",
                *args,
                f"out={tmp_path / (cmd + '2')}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert r5.returncode == 0, r5.stderr[-3000:]
        r6 = subprocess.run(
            [sys.executable, "-m", "maekit", *args, f"out={tmp_path / (cmd + '1')}"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert r6.returncode == 0, r6.stderr[-3000:]
        d2, d1 = (json.loads((tmp_path / f"{cmd}{w}" / "result.json").read_text()) for w in (2, 1))
        assert d2["test_accuracy"] == pytest.approx(d1["test_accuracy"], abs=1e-6), cmd
        assert r5.stdout.count("test accuracy") == 1  # printed by rank 0 only
    # compare under torchrun: every cell distributed, one set of tables, the single-process numbers
    (tmp_path / "cmp.yaml").write_text(
        f"pretrained: {one}\npretrain: {{data: {{path: {fmnist_small}}}}}\nbudgets: [200]\nseeds: [0]\n"
        "methods: [linprobe, knn]\n"
        "linprobe: {train: {epochs: 2, batch_size: 32, progress: false, threads: 1}}\n"
        "knn: {train: {progress: false, threads: 1}}\n"
        f"out: {tmp_path / 'cmp'}\n"
    )
    r7 = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--nnodes=1",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            "-m",
            "maekit",
            "compare",
            "-c",
            str(tmp_path / "cmp.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r7.returncode == 0, r7.stderr[-3000:]
    import csv

    rows = {r["method"]: float(r["test_accuracy"]) for r in csv.DictReader((tmp_path / "cmp" / "results.csv").open())}
    for cmd in ("linprobe", "knn"):
        assert rows[cmd] == pytest.approx(
            json.loads((tmp_path / f"{cmd}1" / "result.json").read_text())["test_accuracy"], abs=1e-6
        )
    c, meta = checkpoint.load(part / "checkpoints" / "last.safetensors")
    assert meta["train_state"]["step"] == 8
    for k in a:
        if k.startswith("model."):
            assert torch.allclose(a[k], c[k], atol=1e-4), k
