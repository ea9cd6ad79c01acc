"""engine/trainer.py (a run's life around train.fit) and runs.py's batched inference, on a tiny regression in one
process: no data files, no ViT, a few seconds."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maekit.config import OptimConfig, TrainConfig
from maekit.engine import checkpoint
from maekit.engine.dist import DistInfo
from maekit.engine.optim import build_optimizer, lr_at
from maekit.engine.rundir import RunDir
from maekit.engine.trainer import Task, Trainer, process
from maekit.errors import MaekitError

N = 40  # training samples: 5 steps per epoch at batch 8
X = torch.randn(N, 3, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5]])


def make(tmp_path, resume=False, warmup=1, **train):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    cfg = TrainConfig(
        **{"epochs": 3, "batch_size": 8, "device": "cpu", "precision": "fp32", "log_every": 1, "progress": False}
        | train
    )
    optim = OptimConfig(lr=0.1, warmup_epochs=warmup)
    run = RunDir(tmp_path, tensorboard=False)
    trainer = Trainer(
        model,
        build_optimizer(model, optim),
        kind="toy",
        run=run,
        train=cfg,
        optim=optim,
        dist=DistInfo(),
        n_train=N,
        resume=resume,
    )
    return trainer, model


def task_of(model, ends=None, select=("val_loss", "min")):
    def step_loss(mb):
        return F.mse_loss(model(X[mb.indices]), Y[mb.indices])

    def evaluate(epoch):
        return {"val_loss": float(F.mse_loss(model(X), Y)), "val_score": float(epoch)}

    hook = None if ends is None else (lambda e, m: ends.append((e, m)))
    return Task(step_loss, evaluate, select=select, meta={"kind": "toy", "note": "kept"}, on_epoch_end=hook)


def test_trainer_warns_when_the_warmup_fills_the_whole_run(tmp_path, capsys):
    """A run no longer than its warmup never reaches the decay of its schedule (the MNIST seed config's 5-epoch
    fine-tune had the default 5 warmup epochs): said on stderr, not silently trained."""
    make(tmp_path / "a", epochs=3, warmup=1)
    assert "never decays" not in capsys.readouterr().err
    make(tmp_path / "b", epochs=5, warmup=5)
    assert "toy: warning: optim.warmup_epochs 5 >= train.epochs 5" in capsys.readouterr().err


def test_trainer_schedule_checkpoints_and_best(tmp_path):
    trainer, model = make(tmp_path)
    assert (trainer.steps_per_epoch, trainer.total_steps, trainer.effective_batch) == (5, 15, 8)
    assert trainer.peak_lr == 0.1 and not trainer.finished
    ends = []
    state = trainer.fit(task_of(model, ends))
    assert trainer.finished and state.step == 15
    assert [e for e, _ in ends] == [0, 1, 2] and all("val_loss" in m for _, m in ends)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs == pytest.approx([lr_at(s, 5, 3, trainer.optim, 0.1) for s in range(15)])
    for name in ("last", "best"):
        _, meta = checkpoint.load(trainer.checkpoint_path(name))
        assert meta["note"] == "kept" and "train_state" in meta and "epoch" in meta
    _, best = checkpoint.load(trainer.checkpoint_path("best"))
    assert best["epoch"] == state.best_epoch
    # load_best puts the best epoch's weights back (the last epoch's differ from them unless it was the best)
    with torch.no_grad():
        model.weight.zero_()
    trainer.load_best()
    tensors, _ = checkpoint.load(trainer.checkpoint_path("best"))
    assert torch.equal(model.weight, checkpoint.model_state(tensors)["weight"])


def test_trainer_select_max_picks_the_highest_metric(tmp_path):
    trainer, model = make(tmp_path)
    state = trainer.fit(task_of(model, select=("val_score", "max")))
    assert state.best == 2.0 and state.best_epoch == 2  # val_score is the epoch: the last one is the best


def test_trainer_stop_after_then_resume_matches_an_uninterrupted_run(tmp_path):
    whole, model = make(tmp_path / "whole")
    whole.fit(task_of(model))
    first, model_a = make(tmp_path / "parts", stop_after=7)
    first.fit(task_of(model_a))
    assert first.state.step == 7 and not first.finished
    second, model_b = make(tmp_path / "parts", resume=True)
    assert second.state.step == 7  # resumed from the stop's `last` checkpoint
    # the first process's training time goes on in the second (a resumed fine-tune's time_s was its last part only)
    assert second.resumed_s == first.state.elapsed_s > 0 and second.elapsed_s >= second.resumed_s
    second.fit(task_of(model_b))
    assert second.finished and torch.equal(model_b.weight, model.weight)
    assert second.state.elapsed_s > first.state.elapsed_s


def test_a_resumed_auto_run_keeps_the_precision_its_trial_chose(tmp_path, monkeypatch):
    """'auto' times a trial once, at the start; the choice goes into the checkpoints and a resumed run trains in it
    (a second trial could choose otherwise, and the run would no longer continue as the uninterrupted one)."""
    from maekit.engine import trainer as trainer_module

    trials = []

    def trial(precision, device, model=None, loss_of=None, flags=None):
        if loss_of is not None:  # a timed trial (without one: the constructor's placeholder)
            trials.append(precision)
        return "bf16", "bf16 (precision=auto on cpu: bf16 ran at 1.50x fp32's speed in a timed trial)"

    monkeypatch.setattr(trainer_module, "choose_precision", trial)
    first, model = make(tmp_path, stop_after=7, precision="auto")
    assert first.choose_precision(lambda m: m(X).sum()) == "bf16" and trials == ["auto"]
    first.fit(task_of(model))
    second, _ = make(tmp_path, resume=True, precision="auto")
    assert second.state.precision == "bf16"  # from the checkpoint
    assert second.choose_precision(lambda m: m(X).sum()) == "bf16" and trials == ["auto"]  # no second trial
    assert "kept from the resumed run" in second.precision_note


def test_trainer_hooks_run_on_the_main_process_only(tmp_path):
    trainer, model = make(tmp_path)

    class OtherRank(DistInfo):  # what a process other than rank 0 sees: no hook, no checkpoint
        is_main = False

    trainer.dist = OtherRank()
    trainer.run = RunDir(tmp_path / "other", active=False)
    ends = []
    trainer.fit(task_of(model, ends))
    assert ends == [] and not (tmp_path / "checkpoints" / "last.safetensors").exists()


def test_trainer_too_few_samples_fail_when_counted(tmp_path):
    trainer, _ = make(tmp_path, batch_size=64)  # constructing it is fine: the count comes on first use
    with pytest.raises(MaekitError, match="fewer than one global batch"):
        trainer.steps_per_epoch


def test_process_sets_cpu_threads_and_restores_nothing_else():
    before = torch.get_num_threads()
    try:
        with process(TrainConfig(device="cpu", threads=1)) as dist:
            assert dist.device.type == "cpu" and not dist.enabled and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_redraw_curves_draws_after_evaluations_only(tmp_path, monkeypatch):
    from maekit import plots
    from maekit.commands.downstream import redraw_curves

    drawn = []
    monkeypatch.setattr(plots, "training_curves", lambda *a: drawn.append(a))
    hook = redraw_curves(tmp_path, "toy, 5 labels")
    hook(0, {})
    hook(1, {"val_accuracy": 0.5})
    assert drawn == [(tmp_path, tmp_path / "curves.png", "toy, 5 labels")]


def test_runs_batched_inference_matches_one_batch():
    from maekit.models.vit import ViT
    from maekit.runs import extract_features, extract_features_sharded, predict

    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    torch.manual_seed(0)
    vit = ViT(img_size=(8, 8), patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2, global_pool="mean")
    vit.reset_head(3)
    logits = predict(vit, images, mean, std, batch_size=3)
    assert logits.shape == (10, 3) and torch.allclose(logits, predict(vit, images, mean, std, batch_size=10))
    feats = extract_features(vit, images, mean, std, "mean", batch_size=4)
    assert feats.shape == (10, 16)
    assert torch.allclose(feats, extract_features_sharded(vit, images, mean, std, "mean", DistInfo()))
