"""The Python API: the same functions as the command line, on a tiny run over real Fashion-MNIST images."""

import json

import numpy as np
import pytest
import torch

import maekit
from maekit.cli import main
from maekit.errors import MaekitError

from conftest import TINY


def _dotted(args: list[str]) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args)}


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, fmnist_small):
    out = tmp_path_factory.mktemp("api") / "run"
    overrides = _dotted(
        [f"data.path={fmnist_small}", *TINY, "train.batch_size=64", "train.eval_samples=64", "train.progress=false"]
    )
    return maekit.pretrain(
        {"model": {"mask_ratio": 0.75}, "train": {"epochs": 1}}, overrides={**overrides, "out": str(out)}
    )


def test_pretrain_from_a_dict_with_overrides_returns_the_loaded_run(api_run):
    assert isinstance(api_run, maekit.Run)
    assert api_run.config["model"]["patch_size"] == 7 and api_run.config["train"]["epochs"] == 1
    assert any("val_recon_loss" in r for r in api_run.metrics)
    assert isinstance(api_run.encoder, torch.nn.Module) and api_run.model_config.embed_dim == 32


def test_embed_takes_every_layout_and_equals_the_embed_command(api_run, fmnist_small, tmp_path):
    from maekit.data import idx

    images = idx.load("fashion_mnist", str(fmnist_small), download=False)["test"][0][:50]  # uint8 [N, 28, 28]
    a = api_run.embed(images)
    assert a.shape == (50, 32) and a.dtype == np.float32
    np.testing.assert_allclose(api_run.embed(images[..., None]), a, atol=1e-6)  # [N, H, W, C]
    np.testing.assert_allclose(api_run.embed(torch.tensor(images)[:, None]), a, atol=1e-6)  # [N, C, H, W]
    np.testing.assert_allclose(api_run.embed(images.astype(np.float32) / 255), a, atol=1e-5)  # float on the 0-1 scale
    assert main(["embed", str(api_run.path), "--split", "test", "--out", str(tmp_path / "f.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "f.npy")[:50], a, atol=1e-5)
    with pytest.raises(MaekitError, match="do not fit this encoder"):
        api_run.embed(np.zeros((2, 32, 32), np.uint8))


def test_reconstruct_is_seeded_and_on_the_input_scale(api_run, fmnist_small):
    from maekit.data import idx

    images = idx.load("fashion_mnist", str(fmnist_small), download=False)["test"][0][:6]
    r1, r2 = api_run.reconstruct(images, mask_ratio=0.75, seed=3), api_run.reconstruct(images, mask_ratio=0.75, seed=3)
    assert np.array_equal(r1["reconstruction"], r2["reconstruction"]) and r1["loss"] == r2["loss"]
    assert r1["reconstruction"].shape == (6, 1, 28, 28) and r1["mask"].shape == (6, 16)
    assert r1["mask"].sum(1).tolist() == [12.0] * 6
    other = api_run.reconstruct(images, mask_ratio=0.75, seed=4)
    assert not np.array_equal(other["mask"], r1["mask"])
    # masked pixels are predicted, visible ones too; both on the 0-1 scale of uint8 input, roughly
    assert -0.5 < float(r1["reconstruction"].mean()) < 1.5
    with pytest.raises(MaekitError, match="mask_ratio"):
        api_run.reconstruct(images, mask_ratio=0.0)


def test_finetune_and_knn_through_the_api_match_the_cli(api_run, fmnist_small, tmp_path):
    common = {
        "data.path": str(fmnist_small),
        "labels": 100,
        "train.progress": False,
        "train.eval_samples": 64,
        "train.batch_size": 32,
    }
    res = maekit.knn({"pretrained": str(api_run.path)}, overrides={**common, "out": str(tmp_path / "k1")})
    assert (
        main(["knn", f"pretrained={api_run.path}", f"out={tmp_path / 'k2'}", *[f"{k}={v}" for k, v in common.items()]])
        == 0
    )
    cli = json.loads((tmp_path / "k2" / "result.json").read_text())
    assert res["test_accuracy"] == cli["test_accuracy"] and res["val_accuracy"] == cli["val_accuracy"]
    ft = maekit.finetune(
        None,
        [
            f"pretrained={api_run.path}",
            f"out={tmp_path / 'ft'}",
            "train.epochs=1",
            *[f"{k}={v}" for k, v in common.items()],
        ],
    )
    assert ft["method"] == "finetune" and ft["labels"] == 100


def test_bad_config_types_are_clear_errors():
    with pytest.raises(MaekitError, match="config must be a YAML path, a dict or a PretrainConfig"):
        maekit.pretrain(42)
    with pytest.raises(MaekitError, match="unknown config key 'train.epoch'"):
        maekit.api.resolve("pretrain", {}, {"train.epoch": 3})


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"maekit {maekit.__version__}"
