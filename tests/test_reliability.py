"""Runs survive SIGKILL at random moments (resumed bit for bit), stop cleanly on SIGTERM, and stop (or skip)
on a non-finite loss without losing the last good checkpoint."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from maekit.cli import main
from maekit.engine import checkpoint
from maekit.models.mae import MAE

from conftest import TINY


def pretrain_cmd(out, data, *extra):
    return [sys.executable, "-m", "maekit", "pretrain", f"out={out}", f"data.path={data}", *TINY, "train.batch_size=64",
            "train.eval_samples=64", "train.progress=false", "train.threads=1", "train.recon_every=100", *extra]


def final_tensors(out):
    tensors, meta = checkpoint.load(out / "checkpoints" / "last.safetensors", fallback=False)
    return tensors, meta


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path, fmnist_small):
    extra = ("train.epochs=8", "train.ckpt_every_steps=1", "resume=true")
    ref = tmp_path / "ref"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(pretrain_cmd(ref, fmnist_small, *extra), check=True, capture_output=True, env=env, timeout=300)
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for attempt in range(40):
        proc = subprocess.Popen(pretrain_cmd(out, fmnist_small, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        if kills < 5:
            # wait for the process to reach training (a checkpoint newer than at start), then kill at a random moment
            start = time.time()
            before = (out / "checkpoints" / "last.safetensors").stat().st_mtime if (out / "checkpoints" / "last.safetensors").exists() else 0
            while time.time() - start < 60 and proc.poll() is None:
                f = out / "checkpoints" / "last.safetensors"
                if f.exists() and f.stat().st_mtime > before:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                # never a half-written checkpoint under the real name
                checkpoint.load(out / "checkpoints" / "last.safetensors")
                continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        break
    assert kills >= 5
    a, meta_a = final_tensors(ref)
    b, meta_b = final_tensors(out)
    assert meta_a["train_state"] == meta_b["train_state"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_checkpoints_and_says_how_to_resume(tmp_path, fmnist_small):
    out = tmp_path / "run"
    proc = subprocess.Popen(pretrain_cmd(out, fmnist_small, "train.epochs=50", "train.log_every=1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    metrics = out / "metrics.jsonl"
    start = time.time()
    while time.time() - start < 120 and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGTERM received: stopped after step" in err and "resume=true" in err and "Traceback" not in err
    _, meta = checkpoint.load(out / "checkpoints" / "last.safetensors", fallback=False)
    assert meta["train_state"]["step"] >= 3


@pytest.mark.parametrize("skip", [False, True])
def test_non_finite_loss(tmp_path, tiny_pretrain_args, monkeypatch, capsys, skip):
    real = MAE.forward_loss
    calls = {"n": 0}

    def sometimes_nan(self, imgs, pred, mask):
        loss = real(self, imgs, pred, mask)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 11:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(MAE, "forward_loss", sometimes_nan)
    out = tmp_path / "run"
    code = main(["pretrain", f"out={out}", *tiny_pretrain_args, "train.epochs=2", "train.ckpt_every_steps=4",
                 f"train.skip_nonfinite={str(skip).lower()}"])
    err = capsys.readouterr().err
    if not skip:
        assert code == 2
        assert "non-finite loss (nan) at step 10 (epoch 1)" in err
        _, meta = checkpoint.load(out / "checkpoints" / "last.safetensors", fallback=False)
        assert meta["train_state"]["step"] == 8  # the last good checkpoint is kept
    else:
        assert code == 0
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert any(r.get("skipped_nonfinite_batches") == 1 for r in rows)


def debris(out, with_info: bool) -> None:
    """What a run killed before its first checkpoint leaves: its folders, some of its files, a half-written one."""
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.safetensors.tmp").write_bytes(b"half")
    (out / "config.yaml").write_text("train: {epochs: 99}\n")
    (out / "splits.npz.tmp").write_bytes(b"half")
    if with_info:
        (out / "run.json").write_text(json.dumps({"kind": "pretrain"}))
        (out / "metrics.jsonl").write_text(json.dumps({"step": 999, "train_loss": 9.0}) + "\n")
        (out / "tensorboard").mkdir()
        (out / "tensorboard" / "events.out.tfevents.0").write_bytes(b"old")


@pytest.mark.parametrize("resume", [True, False])
def test_a_run_killed_before_its_first_checkpoint_starts_afresh(tmp_path, tiny_pretrain_args, capsys, resume):
    for with_info in (False, True):  # killed before run.json was written, and after it
        out = tmp_path / f"run{int(with_info)}"
        debris(out, with_info)
        assert main(["pretrain", f"out={out}", *tiny_pretrain_args, "train.epochs=1", f"resume={str(resume).lower()}"]) == 0
        assert not list(out.rglob("*.tmp"))
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert rows and all(r.get("step", 0) <= 8 for r in rows)  # nothing of the killed run is kept
        assert not (out / "tensorboard" / "events.out.tfevents.0").exists()
        _, meta = checkpoint.load(out / "checkpoints" / "last.safetensors", fallback=False)
        assert meta["train_state"]["step"] == 8 and meta["epoch"] == 0


def test_a_directory_with_a_checkpoint_or_other_files_is_refused_without_resume(tmp_path):
    from maekit.engine.rundir import prepare
    from maekit.errors import MaekitError

    out = tmp_path / "run"
    debris(out, True)
    (out / "checkpoints" / "last.prev.safetensors").write_bytes(b"an earlier checkpoint")
    with pytest.raises(MaekitError, match="already holds files; pass resume=true"):
        prepare(out, False, "pretrain")
    prepare(out, True, "pretrain")  # resumable
    other = tmp_path / "mine"
    debris(other, False)
    (other / "notes.txt").write_text("mine")  # not something a run writes: never deleted
    with pytest.raises(MaekitError, match="already holds files"):
        prepare(other, False, "pretrain")
    with pytest.raises(MaekitError, match="no run.json"):
        prepare(other, True, "pretrain")
    assert (other / "notes.txt").read_text() == "mine" and (other / "config.yaml").exists()


def test_a_stop_at_an_epochs_last_step_keeps_its_evaluation_and_best(tmp_path, fmnist_small, monkeypatch):
    """SIGTERM during the last step of epoch 1: the run evaluates epoch 1 and saves `best` before it stops, so the
    resumed run ends with the same `best`, `last` and evaluation rows as an uninterrupted one."""
    from maekit.engine import train

    args = [f"data.path={fmnist_small}", *TINY, "train.batch_size=64", "train.eval_samples=64", "train.progress=false", "train.epochs=2"]
    assert main(["pretrain", f"out={tmp_path / 'ref'}", *args]) == 0
    spe = 540 // 64  # 540 training images (600 minus the validation tenth)
    original = train.step_generator

    def signal_at_last_step(seed, step, micro=0):
        if step == spe - 1 and micro == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(seed, step, micro)

    monkeypatch.setattr(train, "step_generator", signal_at_last_step)
    assert main(["pretrain", f"out={tmp_path / 'run'}", *args]) == 130
    monkeypatch.setattr(train, "step_generator", original)
    evals = lambda d: [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "val_recon_loss" in r]  # noqa: E731
    assert [r["epoch"] for r in evals(tmp_path / "run")] == [0]  # epoch 1 was evaluated before stopping
    assert main(["pretrain", f"out={tmp_path / 'run'}", *args, "resume=true"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s")} for r in rows]  # noqa: E731
    assert strip(evals(tmp_path / "run")) == strip(evals(tmp_path / "ref"))
    for name in ("best", "last"):
        a, meta_a = checkpoint.load(tmp_path / "ref" / "checkpoints" / f"{name}.safetensors")
        b, meta_b = checkpoint.load(tmp_path / "run" / "checkpoints" / f"{name}.safetensors")
        assert meta_a["epoch"] == meta_b["epoch"] and meta_a["train_state"] == meta_b["train_state"], name
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
