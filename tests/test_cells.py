"""The cell runner that compare and sweep share (maekit/commands/cells.py): which run directories are skipped,
resumed, restarted or refused, when a pretraining counts as finished, and the tables. No training: the run
directories are made by hand, as the commands leave them."""

import dataclasses
import json

import pytest

from maekit.commands import cells
from maekit.config import FinetuneConfig, KnnConfig, ScratchConfig, save_yaml, to_dict
from maekit.errors import MaekitError
from maekit.files import previous_path


def saved_run(path, cfg, *, result=None, checkpoint=False):
    """A downstream run directory as a command leaves it: config.yaml and run.json first, then checkpoints,
    then result.json."""
    path.mkdir(parents=True)
    save_yaml(to_dict(cfg) | {"out": str(path)}, path / "config.yaml")
    (path / "run.json").write_text(json.dumps({"kind": "finetune"}))
    if checkpoint:
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "last.safetensors").write_bytes(b"weights")
    if result is not None:
        (path / "result.json").write_text(json.dumps(result))
    return path


def test_a_finished_cell_is_skipped_and_kept(tmp_path):
    cfg = KnnConfig(labels=60)
    d = saved_run(tmp_path / "knn_labels60_seed0", cfg, result={"test_accuracy": 0.5})
    assert cells.prepare(d, cfg, resumable=False, check_recipe=True) is None
    assert json.loads((d / "result.json").read_text()) == {"test_accuracy": 0.5}  # untouched
    # a finished cell of another recipe is refused, not skipped and not deleted
    with pytest.raises(
        MaekitError, match=r"knn_labels60_seed0 was run with another recipe \(knn_k 20 -> 5\); remove that cell"
    ):
        cells.prepare(d, dataclasses.replace(cfg, knn_k=5), resumable=False, check_recipe=True)
    assert (d / "result.json").exists()
    # a sweep does not compare the cell's recipe (its own directory-level check does): skipped
    assert cells.prepare(d, dataclasses.replace(cfg, knn_k=5), resumable=False) is None


def test_a_downstream_cell_ignores_the_decoder_but_not_the_encoder(tmp_path):
    # a ViT from scratch is the same network whatever decoder the pretraining config names: its finished cell is
    # reused when only the decoder changed (it was refused before), and refused when the encoder changed
    cfg = ScratchConfig(labels=60)
    d = saved_run(tmp_path / "scratch_labels60_seed0", cfg, result={"test_accuracy": 0.5})
    decoder = dataclasses.replace(cfg.model, decoder_attention="cross", decoder_keep=0.25, decoder_depth=4)
    assert cells.prepare(d, dataclasses.replace(cfg, model=decoder), resumable=True, check_recipe=True) is None
    with pytest.raises(MaekitError, match=r"another recipe \(model.depth 6 -> 8\)"):
        encoder = dataclasses.replace(cfg.model, depth=8)
        cells.prepare(d, dataclasses.replace(cfg, model=encoder), resumable=True, check_recipe=True)


def test_an_interrupted_trained_cell_resumes_and_others_restart(tmp_path):
    cfg = FinetuneConfig(labels=60)
    d = saved_run(tmp_path / "finetune", cfg, checkpoint=True)
    got = cells.prepare(d, cfg, resumable=True, check_recipe=True)
    assert got is not None and got.resume is True and got.labels == 60
    assert (d / "checkpoints" / "last.safetensors").exists()  # kept for the resumed run
    # only the .prev copy of the last checkpoint (killed while replacing it): still resumable
    last = d / "checkpoints" / "last.safetensors"
    last.rename(previous_path(last))
    assert cells.prepare(d, cfg, resumable=True).resume is True
    # the same directory for a method that does not resume (k-NN, linear probe): deleted, run afresh
    got = cells.prepare(d, cfg, resumable=False)
    assert got.resume is False and not d.exists()
    # died before its first checkpoint: nothing to resume, so it restarts even for a trained method
    d = saved_run(tmp_path / "early", cfg)
    got = cells.prepare(d, cfg, resumable=True)
    assert got.resume is False and not d.exists()
    # a new cell: nothing on disk, run as given
    assert cells.prepare(tmp_path / "new", dataclasses.replace(cfg, resume=True), resumable=True).resume is False


def test_a_resumable_cell_of_another_recipe_is_refused(tmp_path):
    cfg = FinetuneConfig(labels=60)
    d = saved_run(tmp_path / "finetune_labels60_seed0", cfg, checkpoint=True)
    changed = dataclasses.replace(
        cfg,
        optim=dataclasses.replace(cfg.optim, base_lr=0.002),
        train=dataclasses.replace(cfg.train, epochs=cfg.train.epochs + 2),
    )
    with pytest.raises(MaekitError) as e:
        cells.prepare(d, changed, resumable=True, check_recipe=True)
    assert f"(optim.base_lr 0.001 -> 0.002, train.epochs {cfg.train.epochs} -> {cfg.train.epochs + 2})" in str(e.value)
    assert (d / "checkpoints" / "last.safetensors").exists()  # nothing lost
    # out and resume are not part of the recipe; a key that an older maekit did not write was at its default
    older = json.loads(json.dumps(to_dict(cfg)))
    del older["allow_test_overlap"]
    save_yaml(older | {"out": "elsewhere", "resume": True}, d / "config.yaml")
    assert cells.prepare(d, cfg, resumable=True, check_recipe=True).resume is True


def metrics_rows(path, epochs, val=True):
    rows = [
        {
            "step": 2 * (e + 1),
            "epoch": e,
            "img_per_s": 1.0,
            "epoch_time_s": 1.0,
            **({"train_recon_loss": 1.0, "val_recon_loss": 1.0, "test_recon_loss": 1.0} if val else {}),
        }
        for e in range(epochs)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pretraining_finished_is_one_rule(tmp_path):
    pre = tmp_path / "pretrain"
    assert not cells.pretraining_finished(pre, 2)  # nothing there
    (pre / "checkpoints").mkdir(parents=True)
    metrics_rows(pre, 2)
    (pre / "checkpoints" / "last.safetensors").write_bytes(b"w")
    assert not cells.pretraining_finished(pre, 2)  # no best checkpoint, which downstream runs load
    (pre / "checkpoints" / "best.safetensors").write_bytes(b"w")
    assert cells.pretraining_finished(pre, 2)
    assert not cells.pretraining_finished(pre, 3)  # one epoch to go
    (pre / "checkpoints" / "last.safetensors").unlink()
    assert not cells.pretraining_finished(pre, 2)  # the last epoch's checkpoint is missing
    (pre / "checkpoints" / "last.safetensors").write_bytes(b"w")
    metrics_rows(pre, 2, val=False)
    assert not cells.pretraining_finished(pre, 2)  # the last epoch was never evaluated
    # compare and sweep use this rule for their pretraining directories
    assert (
        cells.prepare(pre, FinetuneConfig(), resumable=True, finished=lambda p: cells.pretraining_finished(p, 2)).resume
        is False
    )


def test_names_and_tables(tmp_path):
    assert (
        cells.cell_name([("finetune", ""), ("labels", "600"), ("seed", "0"), ("lr", "0.016")])
        == "finetune_labels600_seed0_lr0.016"
    )
    assert cells.cell_dir(tmp_path, "a") == tmp_path / "cells" / "a"
    assert cells.name_part("[0.2, 1.0]") == "0.2-1.0" and cells.name_part("///") == "x"
    cells.write_csv(tmp_path / "t.csv", ["cell", "acc"], [{"cell": "a", "acc": 0.5, "other": 1}, {"cell": "b"}])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["cell,acc", "a,0.5", "b,"]
    assert cells.read_csv(tmp_path / "t.csv") == (
        ["cell", "acc"],
        [{"cell": "a", "acc": "0.5"}, {"cell": "b", "acc": ""}],
    )
    assert cells.markdown_table(
        ["key", "loss"], [False, True], [["a", cells.fmt(0.25, "{:.2f}")], ["b", cells.fmt(float("nan"), "{:.2f}")]]
    ) == ["| key | loss |", "|---|---:|", "| a | 0.25 |", "| b | - |"]
