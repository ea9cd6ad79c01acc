"""End-to-end runs of the CLI on a small subset of the real Fashion-MNIST with a tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maekit.cli import main
from maekit.engine import checkpoint

from conftest import TINY, assert_picture, write_idx


def test_pretrain_and_reconstruct_smoke(tmp_path, tiny_pretrain_args, capsys):
    out = tmp_path / "run"
    assert (
        main(["pretrain", "-c", "configs/fashion_mnist.yaml", f"out={out}", "train.epochs=2", *tiny_pretrain_args]) == 0
    )
    for f in (
        "config.yaml",
        "run.json",
        "metrics.jsonl",
        "loss.png",
        "recon_epoch001.png",
        "recon_epoch002.png",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
    ):
        assert (out / f).exists(), f
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "test_recon_loss" in r]
    assert len(epochs) == 2 and all(r["train_recon_loss"] > 0 and r["img_per_s"] > 0 for r in epochs)
    assert any("lr" in r and "train_loss" in r for r in rows)
    _, meta = checkpoint.load(out / "checkpoints" / "last.safetensors")
    assert (
        meta["model_config"]["in_chans"] == 1 and len(meta["data"]["mean"]) == 1 and meta["train_state"]["step"] == 16
    )
    capsys.readouterr()
    assert main(["reconstruct", str(out), "--split", "test", "--n", "4", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["reconstruct", str(out), "--split", "test", "--n", "4", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first  # fixed, seeded masks: the same number twice
    assert "test reconstruction loss" in first
    assert_picture(out / "reconstruct_test_mask0.75_seed3.png")
    assert main(["reconstruct", str(out), "--split", "train", "--mask-ratio", "0.5"]) == 0
    assert "train reconstruction loss (mask ratio 0.5" in capsys.readouterr().out


def test_existing_run_directory_is_never_overwritten(tmp_path, tiny_pretrain_args, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["pretrain", f"out={out}", *tiny_pretrain_args]) == 2
    assert "already holds files; pass resume=true" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["pretrain", f"out={out}", "resume=true", *tiny_pretrain_args]) == 2
    assert "is not a maekit run directory" in capsys.readouterr().err


def test_resume_gives_identical_weights(tmp_path, tiny_pretrain_args):
    args = [*tiny_pretrain_args, "train.epochs=2", "train.recon_every=10"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["pretrain", f"out={full}", *args]) == 0
    # 540 train images / 64 = 8 steps per epoch: stop in the middle of the second epoch, then resume
    assert main(["pretrain", f"out={part}", "train.stop_after=10", *args]) == 0
    _, meta = checkpoint.load(part / "checkpoints" / "last.safetensors")
    assert meta["train_state"]["step"] == 10
    assert main(["pretrain", f"out={part}", "resume=true", *args]) == 0
    a, _ = checkpoint.load(full / "checkpoints" / "last.safetensors")
    b, _ = checkpoint.load(part / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics of the resumed run match the uninterrupted one
    ma = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]

    def strip(rows):  # the timings differ between runs
        return [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s")} for r in rows]

    assert strip(ma) == strip(mb)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["model.mask_ratio=1.0"], r"model.mask_ratio must be in \(0, 1\)"),
        (["model.patch_size=5"], "img_size 28x28 is not divisible by model.patch_size=5"),
        (["data.path=/nonexistent/folder"], "data.path /nonexistent/folder does not exist"),
        (["model.depth=two"], "config key 'model.depth' expects int, got 'two'"),
    ],
)
def test_bad_input_errors(tmp_path, tiny_pretrain_args, capsys, extra, message):
    out = tmp_path / "run"
    assert main(["pretrain", f"out={out}", *tiny_pretrain_args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maekit: error: ") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not (out / "checkpoints").exists()


def test_corrupt_idx_file_subprocess(tmp_path, fmnist_small):
    """A real process: one-line error, exit status 2, no traceback."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in fmnist_small.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    raw = (bad / "train-images-idx3-ubyte.gz").read_bytes()
    (bad / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    r = subprocess.run(
        [sys.executable, "-m", "maekit", "pretrain", f"data.path={bad}", f"out={tmp_path / 'o'}", *TINY],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "train-images-idx3-ubyte.gz is unreadable or corrupt" in r.stderr


def test_missing_data_error_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAEKIT_NO_DOWNLOAD", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["pretrain", "data.name=kmnist", f"out={tmp_path / 'o'}", *TINY]) == 2
    err = capsys.readouterr().err
    assert "kmnist idx files not found" in err and "set data.path=FOLDER or MAEKIT_DATA" in err


def test_label_count_mismatch(tmp_path, fmnist_small, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in fmnist_small.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    import numpy as np

    write_idx(bad / "train-labels-idx1-ubyte.gz", np.zeros(10, dtype=np.uint8))
    assert main(["pretrain", f"data.path={bad}", f"out={tmp_path / 'o'}", *TINY]) == 2
    assert "holds (10,) labels; expected one per image" in capsys.readouterr().err
    assert Path(tmp_path / "o").exists() is False or not any((tmp_path / "o" / "checkpoints").glob("*"))
