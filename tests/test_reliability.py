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
    return [
        sys.executable,
        "-m",
        "maekit",
        "pretrain",
        f"out={out}",
        f"data.path={data}",
        *TINY,
        "train.batch_size=64",
        "train.eval_samples=64",
        "train.progress=false",
        "train.threads=1",
        "train.recon_every=100",
        *extra,
    ]


def final_tensors(out):
    tensors, meta = checkpoint.load(out / "checkpoints" / "last.safetensors", fallback=False)
    return tensors, meta


def untimed(state: dict) -> dict:
    """A checkpoint's train_state without its wall time (which differs between identical runs)."""
    return {k: v for k, v in state.items() if k != "elapsed_s"}


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path, fmnist_small):
    # long enough that five kills land before the end on a fast machine (each attempt lets a few steps pass)
    extra = ("train.epochs=12", "train.ckpt_every_steps=1", "resume=true")
    ref = tmp_path / "ref"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(pretrain_cmd(ref, fmnist_small, *extra), check=True, capture_output=True, env=env, timeout=300)
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for attempt in range(40):
        proc = subprocess.Popen(
            pretrain_cmd(out, fmnist_small, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        if kills < 5:
            # wait for the process to reach training (a checkpoint newer than at start), then kill at a random moment
            start = time.time()
            before = (
                (out / "checkpoints" / "last.safetensors").stat().st_mtime
                if (out / "checkpoints" / "last.safetensors").exists()
                else 0
            )
            while time.time() - start < 60 and proc.poll() is None:
                f = out / "checkpoints" / "last.safetensors"
                if f.exists() and f.stat().st_mtime > before:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.25))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                # never a half-written checkpoint under the real name (no fallback to .prev: `last` itself loads)
                checkpoint.load(out / "checkpoints" / "last.safetensors", fallback=False)
                continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        break
    assert kills >= 5, f"the run finished after {kills} kills"
    a, meta_a = final_tensors(ref)
    b, meta_b = final_tensors(out)
    assert untimed(meta_a["train_state"]) == untimed(meta_b["train_state"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_checkpoints_and_says_how_to_resume(tmp_path, fmnist_small):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        pretrain_cmd(out, fmnist_small, "train.epochs=50", "train.log_every=1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
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
    code = main(
        [
            "pretrain",
            f"out={out}",
            *tiny_pretrain_args,
            "train.epochs=2",
            "train.ckpt_every_steps=4",
            "train.precision=fp32",  # no timed trial (on a CPU with native bf16) among the counted loss calls
            f"train.skip_nonfinite={str(skip).lower()}",
        ]
    )
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
        assert (
            main(["pretrain", f"out={out}", *tiny_pretrain_args, "train.epochs=1", f"resume={str(resume).lower()}"])
            == 0
        )
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

    args = [
        f"data.path={fmnist_small}",
        *TINY,
        "train.batch_size=64",
        "train.eval_samples=64",
        "train.progress=false",
        "train.epochs=2",
    ]
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

    def evals(d):
        return [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "val_recon_loss" in r]

    assert [r["epoch"] for r in evals(tmp_path / "run")] == [0]  # epoch 1 was evaluated before stopping
    assert main(["pretrain", f"out={tmp_path / 'run'}", *args, "resume=true"]) == 0

    def strip(rows):  # the timings differ between runs
        return [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s")} for r in rows]

    assert strip(evals(tmp_path / "run")) == strip(evals(tmp_path / "ref"))
    for name in ("best", "last"):
        a, meta_a = checkpoint.load(tmp_path / "ref" / "checkpoints" / f"{name}.safetensors")
        b, meta_b = checkpoint.load(tmp_path / "run" / "checkpoints" / f"{name}.safetensors")
        assert meta_a["epoch"] == meta_b["epoch"] and untimed(meta_a["train_state"]) == untimed(
            meta_b["train_state"]
        ), name
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_downstream_resume_is_bitwise_identical(tmp_path, fmnist_small, command):
    """Stopped mid-epoch at a step that is not a log step, then resumed: the same weights, optimiser state,
    metrics rows (train loss included) and test result as an uninterrupted run."""
    args = [
        command,
        f"data.path={fmnist_small}",
        *TINY,
        "model.drop_path=0.1",
        "labels=96",
        "train.batch_size=32",
        "train.epochs=3",
        "train.log_every=2",
        "train.eval_samples=64",
        "train.progress=false",
        "train.threads=1",
    ]
    assert main([*args, f"out={tmp_path / 'ref'}"]) == 0
    run = tmp_path / "run"
    # 3 steps per epoch: inside epoch 2, between log lines
    assert main([*args, f"out={run}", "train.stop_after=5"]) == 0
    assert (
        not (run / "result.json").exists()
        and checkpoint.load(run / "checkpoints" / "last.safetensors")[1]["train_state"]["step"] == 5
    )
    stopped_s = checkpoint.load(run / "checkpoints" / "last.safetensors")[1]["train_state"]["elapsed_s"]
    assert main([*args, f"out={run}", "resume=true"]) == 0
    if command == "finetune":  # its time counts the process before the stop too (it was the resumed part only)
        assert json.loads((run / "result.json").read_text())["time_s"] > stopped_s > 0
    timing = ("img_per_s", "epoch_time_s")

    def rows(d):
        return [
            {k: v for k, v in json.loads(x).items() if k not in timing}
            for x in (d / "metrics.jsonl").read_text().splitlines()
        ]

    assert rows(run) == rows(tmp_path / "ref") and any("train_loss" in r for r in rows(run))
    for name in ("best", "last"):
        a, meta_a = checkpoint.load(tmp_path / "ref" / "checkpoints" / f"{name}.safetensors", fallback=False)
        b, meta_b = checkpoint.load(run / "checkpoints" / f"{name}.safetensors", fallback=False)
        assert untimed(meta_a["train_state"]) == untimed(meta_b["train_state"]) and a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name

    def result(d):
        return {k: v for k, v in json.loads((d / "result.json").read_text()).items() if not k.endswith("time_s")}

    assert result(run) == result(tmp_path / "ref")


def test_grad_scaler_and_loss_window_survive_a_checkpoint(tmp_path):
    """The fp16 loss scale and the train-loss window are part of the saved state (the scaler runs on CUDA only;
    its state is the same object on CPU)."""
    from maekit.engine.train import TrainState

    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    scaler._growth_tracker = torch.tensor(5, dtype=torch.int32)
    state = TrainState(
        step=12, best=0.5, best_epoch=2, loss_window=[0.25, 0.5], skipped_nonfinite=1, grad_scaler=scaler.state_dict()
    )
    checkpoint.save(tmp_path / "c.safetensors", {"w": torch.zeros(2)}, {"train_state": state.to_dict()})
    back = TrainState.from_dict(checkpoint.load(tmp_path / "c.safetensors", fallback=False)[1]["train_state"])
    assert back == state
    again = torch.amp.GradScaler("cpu")
    again.load_state_dict(back.grad_scaler)
    assert (
        again.get_scale() == 1024.0 and again.state_dict()["_growth_tracker"] == 5 and again.get_growth_interval() == 7
    )


def test_a_checkpoint_write_that_hits_a_file_size_limit_keeps_the_last_good_one(tmp_path, fmnist_small):
    """The operating system refuses the write (RLIMIT_FSIZE, as a full disk would): one-line error, exit 2, and
    `last` still holds the previous epoch, loadable without falling back to `.prev`."""
    import resource

    out = tmp_path / "run"
    subprocess.run(pretrain_cmd(out, fmnist_small, "train.epochs=1"), check=True, capture_output=True, timeout=300)
    last = out / "checkpoints" / "last.safetensors"
    before = last.read_bytes()
    limit = len(before) // 2  # the small files (metrics, config, figures) fit, a checkpoint does not

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        pretrain_cmd(out, fmnist_small, "train.epochs=2", "resume=true"),
        capture_output=True,
        timeout=300,
        preexec_fn=limited,
    )
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2, proc.stderr.decode()[-2000:]
    assert err[-1].startswith("maekit: error: could not write") and err[-1].endswith(
        "(File too large); the previous file is intact"
    ), err[-1]
    assert last.read_bytes() == before and not list(out.rglob("*.tmp"))
    tensors, meta = checkpoint.load(last, fallback=False)
    assert meta["epoch"] == 0
