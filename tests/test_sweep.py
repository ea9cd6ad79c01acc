"""maekit sweep: grid parsing, a tiny 2-cell sweep with k-NN that is interrupted, resumed and skipped, errors;
FLOPs counting (attention included on CPU)."""

import csv
import json

import pytest
import torch
import yaml

from maekit.cli import main
from maekit.commands import sweep
from maekit.config import parse_grid, split_values
from maekit.errors import MaekitError
from maekit.models.flops import flops_per_image
from maekit.models.mae import MAE, ModelConfig

from conftest import TINY, assert_picture


def test_grid_parsing():
    assert split_values("0.75,0.85") == ["0.75", "0.85"]
    assert split_values("[0.2, 1.0],[0.35,1.0]") == ["[0.2, 1.0]", "[0.35,1.0]"]
    axes, constants = parse_grid(["model.patch_size=2,4", "model.mask_ratio=0.75,0.85", "out=runs/x"])
    assert [(a.key, a.values) for a in axes] == [("model.patch_size", [2, 4]), ("model.mask_ratio", [0.75, 0.85])]
    assert constants == ["out=runs/x"]
    for bad, message in (
        (["model.patch_size"], "must look like key.sub=value1,value2"),
        (["model.patch_size=2,,4"], "has an empty value"),
        (["model.depth=2,2"], "repeats a value"),
        (["a.b=1,2", "a.b=3,4"], "is given twice"),
    ):
        with pytest.raises(MaekitError, match=message):
            parse_grid(bad)


def test_flops_count_attention_on_cpu():
    cfg = ModelConfig(
        img_size=[28, 28],
        in_chans=1,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
        mask_ratio=0.75,
    )
    fl = flops_per_image(MAE(cfg))
    # encoder: cls + 12 visible tokens, 2 layers; decoder: cls + 49 tokens, 1 layer; 4 * T^2 * D per layer
    assert fl["attention"] == 2 * 4 * 13**2 * 32 + 1 * 4 * 50**2 * 32
    assert fl["linear"] > fl["attention"] > 0 and fl["total"] == fl["linear"] + fl["attention"]
    assert flops_per_image(MAE(cfg), mask_ratio=0.5)["total"] > fl["total"]


@pytest.fixture(scope="module")
def tiny_sweep_args(fmnist_small):
    return [
        *TINY,
        f"data.path={fmnist_small}",
        "train.batch_size=64",
        "train.eval_samples=64",
        "train.progress=false",
        "train.epochs=1",
        "train.log_every=2",
        "knn.labels=100",
        "knn.train.eval_samples=64",
        "finetune.labels=100",
        "finetune.train.epochs=2",
        "finetune.train.batch_size=32",
        "finetune.train.eval_samples=64",
        "finetune.train.eval_every=1",
    ]


def test_sweep_interrupt_resume_skip(tmp_path, tiny_sweep_args, capsys, monkeypatch):
    out = tmp_path / "sw"
    grid = ["--grid", "model.mask_ratio=0.5,0.75", "--then", "knn"]
    # 540 training images / 64 = 8 steps per epoch: the first cell stops in the middle of its epoch
    assert main(["sweep", *tiny_sweep_args, f"out={out}", "train.stop_after=3", *grid]) == 0
    first = out / "cells" / "mask_ratio0.5" / "pretrain"
    assert "stopped in mask_ratio=0.5" in capsys.readouterr().out
    assert (
        not (out / "cells" / "mask_ratio0.5" / "cell.json").exists() and not (out / "cells" / "mask_ratio0.75").exists()
    )
    assert main(["sweep", *tiny_sweep_args, f"out={out}", *grid]) == 0
    text = capsys.readouterr().out
    assert "mask_ratio=0.5: resuming pretraining" in text and "resuming at step 3" in text
    rows = (out / "sweep.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",done," in r for r in rows[1:])
    header = rows[0].split(",")
    for col in (
        "model.mask_ratio",
        "train_recon_loss",
        "test_recon_loss",
        "knn_test_accuracy",
        "params_m",
        "mflops_per_image",
        "img_per_s",
        "wall_s",
    ):
        assert col in header, col
    rec = json.loads((out / "cells" / "mask_ratio0.75" / "cell.json").read_text())
    assert (
        rec["epochs"] == 1
        and rec["test_recon_loss"] > 0
        and 0 < rec["knn_test_accuracy"] <= 1
        and rec["attention_mflops_per_image"] > 0
    )
    for f in (
        "sweep.md",
        "loss_curves.png",
        "reconstructions.png",
        "heatmap_test_recon_loss.png",
        "heatmap_knn_test_accuracy.png",
        "heatmap_mflops_per_image.png",
        "config.yaml",
        "run.json",
    ):
        assert (out / f).exists(), f
    assert "| model.mask_ratio |" in (out / "sweep.md").read_text()
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "sweep" and info["env"]["torch"] == torch.__version__ and info["env"]["torch_threads"] >= 1
    assert json.loads((first / "run.json").read_text())["env"]["python"]  # every run records its environment
    # the resumed cell continued from its checkpoint: one uninterrupted history of 8 steps
    steps = [
        json.loads(x)["step"] for x in (first / "metrics.jsonl").read_text().splitlines() if "test_recon_loss" in x
    ]
    assert steps == [8] and [
        json.loads(x)["step"] for x in (first / "metrics.jsonl").read_text().splitlines() if "train_loss" in x
    ] == [2, 4, 6, 8]

    # a third run skips every cell: nothing is trained or evaluated again
    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(sweep.pretrain, "run", boom)
    real_knn = sweep.DOWNSTREAM["knn"]
    monkeypatch.setitem(sweep.DOWNSTREAM, "knn", (sweep.KnnConfig, boom))
    assert main(["sweep", *tiny_sweep_args, f"out={out}", *grid]) == 0
    assert capsys.readouterr().out.count("done, skipped") == 2
    # the seed assignment's classifier per configuration: --then grows to finetune without pretraining again; each
    # cell gets its curves and confusion matrix, and sweep.csv the fine-tune's validation accuracy (for choosing a
    # cell without the test split) beside its test accuracy
    monkeypatch.setitem(sweep.DOWNSTREAM, "knn", real_knn)
    assert main(["sweep", *tiny_sweep_args, f"out={out}", *grid[:-1], "knn,finetune"]) == 0
    for r in list(csv.DictReader((out / "sweep.csv").open())):
        assert r["status"] == "done" and 0.1 < float(r["finetune_val_accuracy"]) <= 1.0
        result = json.loads((out / "cells" / r["cell"] / "finetune" / "result.json").read_text())
        assert float(r["finetune_test_accuracy"]) == result["test_accuracy"]
        for f in ("curves.png", "confusion_matrix.png"):
            assert_picture(out / "cells" / r["cell"] / "finetune" / f)
    assert_picture(out / "heatmap_finetune_test_accuracy.png")
    # the same directory with another grid or another setting is refused
    assert main(["sweep", *tiny_sweep_args, f"out={out}", "--grid", "model.mask_ratio=0.5,0.6"]) == 2
    assert (
        "holds a sweep with a different grid or configuration (at 'grid.model.mask_ratio')" in capsys.readouterr().err
    )
    assert main(["sweep", *tiny_sweep_args, "model.depth=3", f"out={out}", *grid]) == 2
    assert "(at 'model.depth')" in capsys.readouterr().err
    # a sweep recorded by a maekit without some config key (added since, with a default) still continues
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["given"], saved["train"]["skip_nonfinite"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(["sweep", *tiny_sweep_args, f"out={out}", *grid]) == 0
    assert main(["sweep", *tiny_sweep_args, "train.epochs=2", f"out={out}", *grid]) == 2
    assert "(at 'train.epochs')" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--grid", "model.patchsize=2,4"], "unknown config key 'model.patchsize'"),
        (
            ["--grid", "model.mask_ratio=0.5,1.0"],
            "model.mask_ratio must be in (0, 1) (the loss is taken over the masked patches), got 1.0",
        ),
        (["--grid", "model.mask_ratio=0.75"], "--grid needs at least one key with two or more values"),
        (["--grid", "model.mask_ratio=0.5,0.75", "--then", "knn,svm"], "--then: unknown evaluation 'svm'"),
        (["--grid", "model.mask_ratio=0.5,0.75", "knn.labels=-1", "--then", "knn"], "labels must be a positive"),
    ],
)
def test_sweep_bad_input(tmp_path, tiny_sweep_args, capsys, args, message):
    out = tmp_path / "sw"
    assert main(["sweep", *tiny_sweep_args, f"out={out}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maekit: error: ") and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()  # nothing was trained or written


def test_sweep_refuses_a_directory_that_is_not_a_sweep(tmp_path, tiny_sweep_args, capsys):
    out = tmp_path / "sw"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    assert main(["sweep", *tiny_sweep_args, f"out={out}", "--grid", "model.mask_ratio=0.5,0.75"]) == 2
    assert "already holds files and is not a sweep directory" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep"


def test_sweep_cell_names_and_downstream_axes(tmp_path, tiny_sweep_args):
    out, axes, cells, record = sweep.plan(
        None, ["model.mask_ratio=0.5,0.75", "knn.knn_k=5,10"], [*tiny_sweep_args, f"out={tmp_path}"], ["knn"]
    )
    assert [c.name for c in cells] == [
        "mask_ratio0.5_knn_k5",
        "mask_ratio0.5_knn_k10",
        "mask_ratio0.75_knn_k5",
        "mask_ratio0.75_knn_k10",
    ]
    assert [c.downstream["knn"].knn_k for c in cells] == [5, 10, 5, 10]
    assert [c.pretrain.model.mask_ratio for c in cells] == [0.5, 0.5, 0.75, 0.75]
    assert record["grid"] == {"model.mask_ratio": [0.5, 0.75], "knn.knn_k": [5, 10]}
