"""Linear probe, fine-tune, k-NN and compare on a tiny pretrained run over real Fashion-MNIST images."""

import csv
import dataclasses
import json
import math

import pytest
import torch
import yaml

from maekit.cli import main
from maekit.commands import compare, downstream, finetune, linprobe
from maekit.commands.knn import knn_scores
from maekit.config import CompareConfig, load_config
from maekit.engine import checkpoint
from maekit.engine.train import resolve_precision
from maekit.metrics import accuracy, confusion_matrix, roc_auc, roc_auc_binary

from conftest import TINY, assert_picture


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, fmnist_small):
    out = tmp_path_factory.mktemp("pre") / "run"
    args = [
        f"data.path={fmnist_small}",
        *TINY,
        "train.batch_size=64",
        "train.eval_samples=64",
        "train.progress=false",
        "train.epochs=1",
    ]
    assert main(["pretrain", f"out={out}", *args]) == 0
    return out


def down_args(fmnist_small, **kw):
    base = {
        "data.path": fmnist_small,
        "train.progress": "false",
        "train.eval_samples": 100,
        "labels": 100,
        "train.batch_size": 32,
    }
    return [f"{k}={v}" for k, v in (base | kw).items()]


def test_roc_auc_against_hand_computed_values():
    # positives scored 0.35 and 0.8, negatives 0.1 and 0.4: 3 of the 4 (pos, neg) pairs are ordered -> 0.75
    assert roc_auc_binary(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half
    assert roc_auc_binary(torch.tensor([0.5, 0.5, 0.9]), torch.tensor([0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc_binary(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])) != roc_auc_binary(
        torch.tensor([0.1, 0.2]), torch.tensor([1, 1])
    )
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 2, 1])
    # class 0: pos {0.8} vs neg {0.2, 0.1, 0.6} -> 1; class 1: pos {0.7, 0.3} vs neg {0.1, 0.2} -> 1; class 2: 1
    assert roc_auc(probs, labels) == pytest.approx(1.0)
    assert accuracy(probs, labels) == 0.75
    assert confusion_matrix(probs.argmax(1), labels, 3).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


def test_label_subsets_are_stratified_and_reproducible():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    a = downstream.label_subset(labels, 0.1, seed=0)
    assert torch.equal(a, downstream.label_subset(labels, 0.1, seed=0))
    assert not torch.equal(a, downstream.label_subset(labels, 0.1, seed=1))
    assert torch.bincount(labels[a]).tolist() == [50, 30, 20]
    b = downstream.label_subset(labels, 7, seed=0)  # a count: largest-remainder rounding
    assert len(b) == 7 and torch.bincount(labels[b], minlength=3).tolist() == [4, 2, 1]
    assert len(set(a.tolist())) == len(a)


def test_knn_scores_vote_with_neighbours():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    scores = knn_scores(
        bank, torch.tensor([0, 0, 1]), torch.tensor([[1.0, 0.05], [0.05, 1.0]]), 2, k=1, temperature=0.1
    )
    assert scores.argmax(1).tolist() == [0, 1] and torch.allclose(scores.sum(1), torch.ones(2))


def test_linprobe_leaves_the_encoder_unchanged(tmp_path, fmnist_small, pretrained_run, monkeypatch):
    seen = {}
    real = linprobe.build_encoder

    def spy(*a, **k):
        seen["encoder"] = real(*a, **k)
        return seen["encoder"]

    monkeypatch.setattr(linprobe, "build_encoder", spy)
    assert (
        main(
            [
                "linprobe",
                f"pretrained={pretrained_run}",
                f"out={tmp_path / 'lp'}",
                "train.epochs=3",
                *down_args(fmnist_small),
            ]
        )
        == 0
    )
    tensors, _ = checkpoint.load(pretrained_run / "checkpoints" / "best.safetensors")
    for name, value in seen["encoder"].state_dict().items():
        if not name.startswith("head"):
            assert torch.equal(value, tensors["model.encoder." + name]), name
    result = json.loads((tmp_path / "lp" / "result.json").read_text())
    # above chance (0.1, whose spread over 300 images is 0.017): labels and images stay paired through features, head
    # and test
    assert result["labels"] == 100 and result["test_accuracy"] > 0.15 and result["test_images"] == 300
    assert_picture(tmp_path / "lp" / "confusion_matrix.png")
    assert_picture(tmp_path / "lp" / "curves.png")


def test_scratch_and_pretrained_differ_only_in_initial_weights_and_recipe(pretrained_run, fmnist_small):
    cfg = load_config(CompareConfig, None, [f"pretrain.data.path={fmnist_small}"])
    ft = compare._cell_config(cfg, "finetune", 100, 1, None, str(pretrained_run))
    sc = compare._cell_config(cfg, "scratch", 100, 1, None, str(pretrained_run))
    assert ft.pretrained == str(pretrained_run) and sc.pretrained is None
    # the from-scratch ViT has its own recipe: no layer decay (0.75 starves a random encoder's early layers)
    assert ft.optim.layer_decay == 0.75 and sc.optim.layer_decay == 1.0
    recipe = ("optim", "train", "label_smoothing", "mixup", "cutmix", "pool")
    same = {k: getattr(cfg.scratch, k) for k in recipe} | {"train": dataclasses.replace(cfg.scratch.train, seed=1)}
    assert dataclasses.asdict(dataclasses.replace(ft, pretrained=None, **same)) == dataclasses.asdict(sc)
    a = downstream.build_encoder(downstream.prepare_setup(ft), 10, "mean", 0.0, seed=1)
    b = downstream.build_encoder(downstream.prepare_setup(sc), 10, "mean", 0.0, seed=1)
    assert torch.equal(a.head.weight, b.head.weight)  # same seeded head
    assert not torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]


def test_finetune_and_knn_cli(tmp_path, fmnist_small, pretrained_run):
    assert (
        main(
            [
                "finetune",
                f"pretrained={pretrained_run}",
                f"out={tmp_path / 'ft'}",
                "train.epochs=2",
                "train.eval_every=1",
                *down_args(fmnist_small),
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert sum("val_accuracy" in r for r in rows) == 2
    info = json.loads((tmp_path / "ft" / "run.json").read_text())  # the precision auto chose, as pretrain records it
    native = resolve_precision("auto", torch.device("cpu")) == "bf16"  # then a timed trial chooses
    assert info["precision"] in (("fp32", "bf16") if native else ("fp32",)) and info["world_size"] == 1
    assert main(["knn", "pretrained=none", f"out={tmp_path / 'knn'}", *TINY, *down_args(fmnist_small)]) == 0
    # pixels-ish features on 10 classes
    assert json.loads((tmp_path / "knn" / "result.json").read_text())["test_accuracy"] > 0.3


def test_compare_smoke_and_resume(tmp_path, fmnist_small, pretrained_run, monkeypatch, capsys):
    out = tmp_path / "cmp"
    args = [
        "compare",
        f"pretrained={pretrained_run}",
        f"out={out}",
        f"pretrain.data.path={fmnist_small}",
        "budgets=[60]",
        "seeds=[0, 1]",
        "methods=[finetune, scratch, linprobe, knn]",
        "finetune.train.epochs=1",
        "scratch.train.epochs=1",
        "linprobe.train.epochs=2",
        *[
            f"{m}.train.{k}"
            for m in ("finetune", "scratch", "linprobe", "knn")
            for k in ("progress=false", "eval_samples=64", "batch_size=32")
        ],
    ]
    assert main(args) == 0
    csv_rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 2 * 4
    md = (out / "results.md").read_text()
    assert (
        "fine-tune (MAE-pretrained)" in md
        and "from scratch" in md
        and "fine-tune minus ViT from scratch (own recipe)" in md
    )
    assert_picture(out / "accuracy_vs_labels.png")

    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(finetune, "run", boom)
    monkeypatch.setattr(linprobe, "run", boom)
    # a cell saved by an older maekit lacks keys added since (at their defaults then): still the same recipe
    import yaml

    cell_cfg = out / "cells" / "finetune_labels60_seed0" / "config.yaml"
    older = yaml.safe_load(cell_cfg.read_text())
    del older["allow_test_overlap"], older["model"]["loss"], older["model"]["empty_level"]
    cell_cfg.write_text(yaml.safe_dump(older))
    assert main(args) == 0
    assert (out / "results.csv").read_text().strip().splitlines() == csv_rows
    # another recipe on the same directory: refused, naming what changed, and nothing is lost
    assert main([*args, "finetune.train.epochs=3", "finetune.optim.base_lr=0.002"]) == 2
    err = capsys.readouterr().err
    assert (
        "finetune_labels60_seed0 was run with another recipe (optim.base_lr 0.001 -> 0.002, train.epochs 1 -> 3)" in err
    )
    assert (out / "results.csv").read_text().strip().splitlines() == csv_rows
    assert yaml.safe_load((out / "config.yaml").read_text())["finetune"]["train"]["epochs"] == 1  # still what ran


def test_compare_chooses_the_learning_rate_on_validation(tmp_path, fmnist_small, pretrained_run):
    out = tmp_path / "cmp"
    args = [
        "compare",
        f"pretrained={pretrained_run}",
        f"out={out}",
        f"pretrain.data.path={fmnist_small}",
        "budgets=[60]",
        "seeds=[0, 1]",
        "methods=[finetune, scratch]",
        "finetune_lrs=[1.0e-3, 1.0e-2]",
        "scratch_lrs=[1.0e-3, 1.0e-2]",
        *[
            f"{m}.train.{k}"
            for m in ("finetune", "scratch")
            for k in ("epochs=2", "eval_every=1", "progress=false", "eval_samples=64", "batch_size=32")
        ],
    ]
    assert main(args) == 0
    cells = sorted(p.name for p in (out / "cells").iterdir())
    # the first seed tries both rates; the second seed runs only the chosen one
    assert {
        "finetune_labels60_seed0_lr0.001",
        "finetune_labels60_seed0_lr0.01",
        "scratch_labels60_seed0_lr0.001",
        "scratch_labels60_seed0_lr0.01",
    } <= set(cells)
    assert len(cells) == 6
    for method in ("finetune", "scratch"):
        trials = {
            lr: json.loads((out / "cells" / f"{method}_labels60_seed0{sfx}" / "result.json").read_text())
            for lr, sfx in ((1e-3, "_lr0.001"), (1e-2, "_lr0.01"))
        }
        chosen = max(trials, key=lambda k: trials[k]["val_accuracy"])
        seed1 = [c for c in cells if c.startswith(f"{method}_labels60_seed1")]
        assert (
            len(seed1) == 1 and json.loads((out / "cells" / seed1[0] / "result.json").read_text())["base_lr"] == chosen
        )
    assert "chosen on the validation split" in (out / "results.md").read_text()
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + 4


def test_compare_grid_rate_replaces_an_absolute_lr(tmp_path, fmnist_small, pretrained_run, monkeypatch):
    """A section with an absolute optim.lr (as the Task 3d seed configs have: 1.0e-5) plus a finetune_lrs grid: each
    grid cell trains at its grid rate (a base_lr, per 256 images), not at the section's lr; results.csv says which
    rate every cell ran at (base_lr, or the absolute lr when no grid replaced it)."""
    from maekit.engine.optim import peak_lr

    ran = {}

    def fake(c, out, method):  # records the rate a cell would train at; a result without training
        ran[out.name] = peak_lr(c.optim, c.train.batch_size)
        out.mkdir(parents=True, exist_ok=True)
        return {
            "method": method,
            "labels": 60,
            "seed": c.train.seed,
            "test_accuracy": 0.5,
            "test_roc_auc": 0.5,
            "val_accuracy": 0.5 + c.optim.base_lr,
        }

    monkeypatch.setattr(finetune, "run", fake)
    base = [
        "compare",
        f"pretrained={pretrained_run}",
        f"pretrain.data.path={fmnist_small}",
        "budgets=[60]",
        "seeds=[0]",
        "methods=[finetune]",
        "finetune.optim.lr=1.0e-5",
        "finetune.train.batch_size=32",
    ]
    assert main([*base, f"out={tmp_path / 'grid'}", "finetune_lrs=[1.0e-3, 1.0e-2]"]) == 0
    assert ran == {
        "finetune_labels60_seed0_lr0.001": pytest.approx(1e-3 * 32 / 256),
        "finetune_labels60_seed0_lr0.01": pytest.approx(1e-2 * 32 / 256),
    }
    row = next(csv.DictReader((tmp_path / "grid" / "results.csv").open()))
    assert (row["base_lr"], row["lr"]) == ("0.01", "")
    ran.clear()
    assert main([*base, f"out={tmp_path / 'seed_lr'}"]) == 0
    assert ran == {"finetune_labels60_seed0": pytest.approx(1e-5)}
    row = next(csv.DictReader((tmp_path / "seed_lr" / "results.csv").open()))
    assert (row["base_lr"], float(row["lr"])) == ("", 1e-5)


def _precision_recording_run(trials: list, choices: list[str]):
    """A stand-in for finetune.run that saves its config and precision the way a real run does, without training: a
    timed trial ('auto') is appended to `trials` and chooses choices[trial number] (the last one after that)."""
    from maekit.config import save_yaml, to_dict

    def run(c, out, method):
        chose = c.train.precision
        if chose == "auto":
            trials.append(out.name)
            chose = choices[min(len(trials), len(choices)) - 1]
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(to_dict(c) | {"out": str(out)}, out / "config.yaml")
        (out / "run.json").write_text(json.dumps({"kind": method, "precision": chose}))
        val = {1e-3: 0.5, 1e-2: 0.6, 1e-1: 0.55}[c.optim.base_lr]
        return {
            "method": method,
            "labels": 60,
            "seed": c.train.seed,
            "test_accuracy": val,
            "test_roc_auc": 0.5,
            "val_accuracy": val,
        }

    return run


def test_compare_trains_every_cell_of_a_method_in_its_first_cells_precision(
    tmp_path, fmnist_small, pretrained_run, monkeypatch
):
    """precision auto: a method's first cell runs the timed trial and the method's later cells train in its choice.
    Before, each cell ran its own trial, and a speed-up near the bar split one method's cells between fp32 and bf16
    (seen on an AVX-512 BF16 CPU). A cell that an older maekit ran with 'auto' is still accepted when run again."""
    from maekit.config import save_yaml

    trials = []
    monkeypatch.setattr(finetune, "run", _precision_recording_run(trials, ["fp32", "bf16"]))  # the trial flips
    out = tmp_path / "cmp"
    args = [
        "compare",
        f"pretrained={pretrained_run}",
        f"out={out}",
        f"pretrain.data.path={fmnist_small}",
        "budgets=[60]",
        "seeds=[0, 1, 2]",
        "methods=[finetune]",
        "finetune_lrs=[1.0e-3, 1.0e-2]",
        "finetune.train.precision=auto",
    ]
    assert main(args) == 0
    ran = sorted((out / "cells").iterdir())
    assert trials == ["finetune_labels60_seed0_lr0.001"]  # one trial for the method
    assert {json.loads((d / "run.json").read_text())["precision"] for d in ran} == {"fp32"}, ran
    assert len(ran) == 4
    # run again: every cell is found finished with its recipe (the pinned precision is decided the same way)
    assert main(args) == 0 and len(trials) == 1
    # a cell an older maekit ran with 'auto' keeps 'auto' (no "another recipe" error)
    old = out / "cells" / "finetune_labels60_seed1_lr0.01"
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    cfg["train"]["precision"] = "auto"
    save_yaml(cfg, old / "config.yaml")
    assert main(args) == 0


def test_compare_reuses_pinned_cells_when_a_changed_grid_makes_one_of_them_first(
    tmp_path, fmnist_small, pretrained_run, monkeypatch
):
    """A grid moved up one step ([1e-3, 1e-2] -> [1e-2, 1e-1]) makes the pinned 1e-2 cell the method's first. It is
    reused in the precision it was pinned to, and the new cells train in that too. Before, the recipe check compared
    its saved 'bf16' with the section's 'auto' and refused the whole compare ("run with another recipe")."""
    trials = []
    monkeypatch.setattr(finetune, "run", _precision_recording_run(trials, ["bf16"]))
    out = tmp_path / "cmp"
    args = [
        "compare",
        f"pretrained={pretrained_run}",
        f"out={out}",
        f"pretrain.data.path={fmnist_small}",
        "budgets=[60]",
        "seeds=[0]",
        "methods=[finetune]",
        "finetune.train.precision=auto",
    ]
    assert main(args + ["finetune_lrs=[1.0e-3, 1.0e-2]"]) == 0
    assert trials == ["finetune_labels60_seed0_lr0.001"]
    assert main(args + ["finetune_lrs=[1.0e-2, 1.0e-1]"]) == 0
    assert trials == ["finetune_labels60_seed0_lr0.001"]  # no second trial: the reused first cell pinned the method
    new = out / "cells" / "finetune_labels60_seed0_lr0.1"
    assert json.loads((new / "run.json").read_text())["precision"] == "bf16"
    assert yaml.safe_load((new / "config.yaml").read_text())["train"]["precision"] == "bf16"


def test_compare_says_when_the_chosen_rate_is_at_the_edge_of_its_grid(
    tmp_path, fmnist_small, pretrained_run, monkeypatch, capsys
):
    """A rate chosen at either end of its grid may not be the best one: results.md and the console say so, with the
    key to widen; a rate chosen inside the grid gets no such note."""
    best = {}

    def fake(c, out, method):  # validation accuracy peaks at best[method]: no training
        out.mkdir(parents=True, exist_ok=True)
        acc = 0.9 - abs(math.log(c.optim.base_lr / best[method]))
        return {
            "method": method,
            "labels": 60,
            "seed": 0,
            "test_accuracy": 0.5,
            "test_roc_auc": 0.5,
            "val_accuracy": acc,
        }

    monkeypatch.setattr(finetune, "run", fake)
    best.update(finetune=1e-2, scratch=2e-3)
    args = [
        "compare",
        f"pretrained={pretrained_run}",
        f"pretrain.data.path={fmnist_small}",
        "budgets=[60]",
        "seeds=[0]",
        "methods=[finetune, scratch]",
        "finetune_lrs=[1.0e-3, 2.0e-3, 4.0e-3]",
        "scratch_lrs=[1.0e-3, 2.0e-3, 4.0e-3]",
        f"out={tmp_path / 'cmp'}",
    ]
    assert main(args) == 0
    md = (tmp_path / "cmp" / "results.md").read_text()
    ft = next(line for line in md.splitlines() if line.startswith("- fine-tune"))
    sc = next(line for line in md.splitlines() if line.startswith("- ViT from scratch"))
    assert "base_lr 0.004" in ft and "at the upper end of the grid: finetune_lrs" in ft
    assert "base_lr 0.002" in sc and "end of the grid" not in sc
    assert "at the upper end of the grid: finetune_lrs" in capsys.readouterr().out
    best.update(finetune=1e-4)
    assert main([*args[:-1], f"out={tmp_path / 'low'}", "methods=[finetune]"]) == 0
    assert "at the lower end of the grid" in (tmp_path / "low" / "results.md").read_text()


def test_cnn_and_pixel_knn_rows_in_compare(tmp_path, fmnist_small, pretrained_run):
    out = tmp_path / "cmp"
    args = [
        "compare",
        f"pretrained={pretrained_run}",
        f"out={out}",
        f"pretrain.data.path={fmnist_small}",
        "budgets=[60]",
        "seeds=[0]",
        "methods=[cnn, pixel_knn]",
        "cnn_lrs=[4.0e-3, 3.2e-2]",
        "cnn.train.epochs=2",
        "cnn.cnn_width=8",
        *[f"{m}.train.{k}" for m in ("cnn", "knn") for k in ("progress=false", "eval_samples=64", "batch_size=32")],
    ]
    assert main(args) == 0
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["cnn_labels60_seed0_lr0.004", "cnn_labels60_seed0_lr0.032", "pixel_knn_labels60_seed0"]
    ckpt, meta = checkpoint.load(out / "cells" / cells[0] / "checkpoints" / "best.safetensors")
    assert meta["arch"] == "cnn" and any(k.endswith("features.0.weight") for k in ckpt)  # a CNN, not a ViT
    md = (out / "results.md").read_text()
    assert "small CNN from scratch" in md and "k-NN on pixels" in md


def test_pixel_knn_equals_knn_on_raw_normalised_pixels(tmp_path, fmnist_small):
    from maekit.commands.knn import pixel_features

    assert main(["knn", "features=pixels", f"out={tmp_path / 'px'}", *down_args(fmnist_small)]) == 0
    result = json.loads((tmp_path / "px" / "result.json").read_text())
    setup = downstream.prepare_setup(load_config(finetune.FinetuneConfig, None, down_args(fmnist_small)))
    flat = lambda s: ((s.images.float() / 255 - setup.mean) / setup.std).flatten(1)  # noqa: E731
    assert torch.allclose(pixel_features(setup.labelled.images, setup.mean, setup.std), flat(setup.labelled), atol=1e-6)
    probs = knn_scores(flat(setup.labelled), setup.labelled.labels, flat(setup.splits.test), 10, 20, 0.07)
    assert result["test_accuracy"] == pytest.approx(accuracy(probs, setup.splits.test.labels))


def test_cnn_refuses_a_pretrained_encoder(pretrained_run, fmnist_small):
    from maekit.errors import MaekitError

    with pytest.raises(MaekitError, match="arch=cnn"):
        load_config(finetune.FinetuneConfig, None, ["arch=cnn", f"pretrained={pretrained_run}"])


def test_mixup_and_cutmix_blend_each_image_with_its_reversed_partner():
    from maekit.data.transforms import mixup_cutmix

    x = torch.arange(4 * 1 * 8 * 8, dtype=torch.float32).view(4, 1, 8, 8)
    same, lam = mixup_cutmix(x, torch.Generator().manual_seed(0))
    assert same is x and lam == 1.0
    mixed, lam = mixup_cutmix(x, torch.Generator().manual_seed(1), mixup_alpha=0.8)
    assert 0 < lam < 1 and torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0))
    for seed in range(5):
        cut, lam = mixup_cutmix(x, torch.Generator().manual_seed(seed), cutmix_alpha=1.0)
        from_self = (cut == x).float().mean().item()  # pixels differ between the images, so each comes from one
        assert from_self == pytest.approx(lam) and torch.all((cut == x) | (cut == x.flip(0)))
    a, _ = mixup_cutmix(x, torch.Generator().manual_seed(3), 0.8, 1.0)
    b, _ = mixup_cutmix(x, torch.Generator().manual_seed(3), 0.8, 1.0)
    assert torch.equal(a, b)  # a function of the step's generator: resume and DDP see the same batch


def test_training_curves_are_drawn_on_evaluated_epochs_only(tmp_path, fmnist_small, pretrained_run, monkeypatch):
    # a drawing costs about half a second of CPU: drawn after every epoch, it was most of a linear probe's time
    from maekit import plots

    drawn, real = [], plots.training_curves
    monkeypatch.setattr(plots, "training_curves", lambda *a, **k: (drawn.append(a[0]), real(*a, **k)))
    for cmd in ("linprobe", "finetune"):
        out = tmp_path / cmd
        args = [
            f"pretrained={pretrained_run}",
            f"out={out}",
            "train.epochs=4",
            "train.eval_every=2",
            *down_args(fmnist_small),
        ]
        assert main([cmd, *args]) == 0
        assert drawn.count(out) == 2  # after the evaluations of epochs 2 and 4
        assert_picture(out / "curves.png")


def test_linprobe_schedule_counts_accumulation(tmp_path, fmnist_small, pretrained_run):
    # 100 labels, batch 16 x 2 accumulation: 3 optimiser steps per epoch, so 12 in 4 epochs and the cosine ends at
    # min_lr
    out = tmp_path / "lp"
    assert (
        main(
            [
                "linprobe",
                f"pretrained={pretrained_run}",
                f"out={out}",
                "train.epochs=4",
                "train.accum_steps=2",
                "train.log_every=1",
                "optim.lr=0.01",
                "optim.min_lr=0.0001",
                "optim.warmup_epochs=1",
                *down_args(fmnist_small, **{"train.batch_size": 16}),
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert len(lrs) == 12 and max(lrs) == pytest.approx(0.01)
    assert lrs[-1] < 0.0001 + 0.05 * (0.01 - 0.0001)  # the last step is near the end of the cosine, not half-way


def test_undefined_roc_auc_reads_n_a(tmp_path, capsys):
    # every test image of one class: ROC-AUC is undefined and says why, in the printout and in results.md
    from maekit.engine.rundir import RunDir

    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5]]), torch.tensor([0, 0, 0])
    result = downstream.finish(RunDir(tmp_path / "lp"), "linprobe", logits, labels, None, {})
    out = capsys.readouterr().out
    assert "ROC-AUC n/a (one class in the test split)" in out and "nan" not in out.lower()
    saved = json.loads(
        (tmp_path / "lp" / "result.json").read_text(), parse_constant=lambda c: pytest.fail(f"result.json holds {c}")
    )
    assert saved["test_roc_auc"] is None and saved["test_roc_auc_note"] == "one class in the test split"
    cells = [{**result, "labels": 3, "seed": s, "test_accuracy": 0.5 + s / 10, "val_accuracy": 0.5} for s in range(2)]
    compare.write_tables(cells, tmp_path, "pre")
    md = (tmp_path / "results.md").read_text()
    assert "| n/a (one class in the test split) |" in md and "nan" not in md.lower()


def test_finetune_reads_the_test_split_once_after_choosing_on_validation(
    tmp_path, fmnist_small, pretrained_run, monkeypatch
):
    """Every evaluation before the end uses the validation images; the 300 test images are predicted once, last,
    with the best checkpoint; and layer decay reaches the optimiser (the patch embedding's LR is decay^(depth+1)
    of the head's)."""
    seen, opts = [], []
    real_predict, real_opt = finetune.predict, finetune.build_optimizer
    monkeypatch.setattr(
        finetune,
        "predict",
        lambda model, images, *a, **k: seen.append(len(images)) or real_predict(model, images, *a, **k),
    )
    monkeypatch.setattr(finetune, "build_optimizer", lambda *a, **k: opts.append(real_opt(*a, **k)) or opts[-1])
    assert (
        main(
            [
                "finetune",
                f"pretrained={pretrained_run}",
                f"out={tmp_path / 'ft'}",
                "train.epochs=3",
                "train.eval_every=1",
                "optim.layer_decay=0.5",
                *down_args(fmnist_small),
            ]
        )
        == 0
    )
    assert seen == [60, 60, 60, 300]  # the 60 validation images each epoch, then the 300 test images once
    lrs = {tuple(p.shape): g["lr"] for g in opts[0].param_groups for p in g["params"]}
    head_lr = lrs[(10, 32)]  # the classifier head (TINY: width 32, 10 classes)
    # patch embedding, TINY depth 2
    assert head_lr > 0 and lrs[(32, 1, 7, 7)] == pytest.approx(head_lr * 0.5 ** (2 + 1))
    # MLP fc1 of a block
    assert lrs[(32 * 4, 32)] == pytest.approx(head_lr * 0.5**2) or lrs[(32 * 4, 32)] == pytest.approx(head_lr * 0.5)
    result = json.loads((tmp_path / "ft" / "result.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    best = max((r for r in rows if "val_accuracy" in r), key=lambda r: r["val_accuracy"])
    assert result["val_accuracy"] == best["val_accuracy"] and result["best_epoch"] == best["epoch"] + 1


def test_knn_bank_holds_only_the_labelled_training_images(tmp_path, fmnist_small, pretrained_run, monkeypatch):
    from maekit.commands import knn

    banks = []
    real = knn.knn_scores
    monkeypatch.setattr(
        knn,
        "knn_scores",
        lambda bank, labels, *a, **k: banks.append((bank.shape[0], labels.clone())) or real(bank, labels, *a, **k),
    )
    assert main(["knn", f"pretrained={pretrained_run}", f"out={tmp_path / 'knn'}", *down_args(fmnist_small)]) == 0
    setup = downstream.prepare_setup(
        load_config(knn.KnnConfig, None, [f"pretrained={pretrained_run}", *down_args(fmnist_small)])
    )
    assert len(banks) == 2  # validation, then test
    for size, labels in banks:
        assert size == 100 and torch.equal(labels, setup.labelled.labels)
