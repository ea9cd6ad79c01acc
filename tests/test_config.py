from pathlib import Path

import pytest

from maekit.config import (
    CompareConfig,
    FinetuneConfig,
    KnnConfig,
    LinprobeConfig,
    PretrainConfig,
    from_dict,
    load_config,
    read_yaml,
)
from maekit.errors import MaekitError

METHOD_SECTIONS = ("finetune", "scratch", "cnn", "linprobe")  # the sections of a compare config that train
CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))  # configs/seeds/ too


def test_there_are_shipped_configs():
    names = {p.name for p in CONFIGS}
    assert {
        "fashion_mnist.yaml",
        "mnist.yaml",
        "seed_jets_125.yaml",
        "seed_base8.yaml",
        "vit_tiny_fashion_mnist.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_yaml_validates(path):
    data = read_yaml(path)
    compare = "pretrain" in data or "methods" in data  # `maekit compare` configs (the seed workflows among them)
    if not compare:  # a pretraining config, perhaps with the sweep's evaluation sections (maekit/commands/sweep.py)
        from maekit.commands.sweep import DOWNSTREAM

        sections = []
        for m, (dcls, _) in DOWNSTREAM.items():
            if m in data:
                sections.append(from_dict(dcls, data.pop(m), f"{m}."))
                sections[-1].validate()
    cls = CompareConfig if compare else PretrainConfig
    cfg = from_dict(cls, data)
    cfg.validate()
    # every run the config trains gets past its warmup (the MNIST seed's 5-epoch fine-tune had 5 warmup epochs)
    if compare:
        runs = [cfg.pretrain, *(getattr(cfg, m) for m in METHOD_SECTIONS)]
    else:
        runs = [cfg, *(s for s in sections if not isinstance(s, KnnConfig))]
    for run in runs:
        if run.optim.schedule != "constant":
            assert run.optim.warmup_epochs < run.train.epochs, (path.name, type(run).__name__)


def test_every_seed_project_has_a_config_and_a_documented_workflow():
    seeds = {p.name for p in CONFIGS if p.parent.name == "seeds"}
    assert {
        "e2e_mae_jets.yaml",
        "task3d_8ch_pretrain.yaml",
        "task3d_8ch_downstream.yaml",
        "cifar10_mae.yaml",
        "mnist_assignment.yaml",
        "dog_photos.yaml",
    } <= seeds
    doc = (Path(__file__).parent.parent / "docs" / "seeds.md").read_text()
    assert all(f"configs/seeds/{name}" in doc for name in seeds)


def test_yaml_and_dotted_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {preset: vit-tiny, patch_size: 7}\ntrain: {epochs: 3}\n")
    cfg = load_config(
        PretrainConfig,
        f,
        ["model.mask_ratio=0.6", "train.epochs=5", "optim.lr=1e-4", "data.augment.hflip=false", "init=none"],
    )
    assert cfg.model.embed_dim == 192 and cfg.model.depth == 12  # from the preset
    assert cfg.model.patch_size == 7 and cfg.model.mask_ratio == 0.6
    assert cfg.train.epochs == 5 and cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.data.augment.hflip is False and cfg.init is None
    assert cfg.model.img_size is None


def test_img_size_int_means_square():
    cfg = load_config(PretrainConfig, None, ["model.img_size=32"])
    assert cfg.model.img_size == [32, 32]


def test_partial_section_keeps_command_defaults():
    cfg = load_config(FinetuneConfig, None, ["optim.lr=1e-5"])
    assert cfg.optim.layer_decay == 0.75 and cfg.optim.lr == 1e-5
    cmp = load_config(CompareConfig, None, ["finetune.optim.weight_decay=0.1"])
    assert cmp.finetune.optim.layer_decay == 0.75 and cmp.finetune.optim.weight_decay == 0.1
    assert load_config(LinprobeConfig, None).pool == "cls" and load_config(KnnConfig, None).knn_k == 20


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.patchsize=4", "unknown config key 'model.patchsize'"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("train.epochs=ten", "config key 'train.epochs' expects int, got 'ten'"),
        ("train.epochs=2.5", "config key 'train.epochs' expects int"),
        ("model.norm_pix_loss=maybe", "config key 'model.norm_pix_loss' expects bool"),
        ("model.mask_ratio=1.0", r"model.mask_ratio must be in \(0, 1\)"),
        ("model.mask_ratio=-0.1", r"model.mask_ratio must be in \(0, 1\)"),
        (
            "model.mask_ratio=0",
            r"model.mask_ratio must be in \(0, 1\) \(the loss is taken over the masked patches\), got 0.0",
        ),
        ("model.preset=vit-huge", "unknown preset 'vit-huge'"),
        ("train.precision=fp8", "config key 'train.precision' must be one of"),
        ("model.img_size=30", "img_size 30x30 is not divisible by model.patch_size=4"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("model", "must look like key.sub=value"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(MaekitError, match=message):
        load_config(PretrainConfig, None, [override])


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(MaekitError, match="config file .* not found"):
        load_config(PretrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(MaekitError, match="is not valid YAML"):
        load_config(PretrainConfig, bad)


def test_compare_validates_methods_and_budgets():
    with pytest.raises(MaekitError, match="unknown method 'svm'"):
        load_config(CompareConfig, None, ["methods=[svm]"])
    with pytest.raises(MaekitError, match="finetune_epochs must have one entry per budget"):
        load_config(CompareConfig, None, ["budgets=[600, 6000]", "finetune_epochs=[10]"])
