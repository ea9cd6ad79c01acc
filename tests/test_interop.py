"""Hugging Face transformers ViTMAE interop: export, import, numerical equality, CLI export / embed, errors.
Tiny models only; no network (everything is loaded from local directories)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel

from maekit.cli import main
from maekit.config import DataConfig
from maekit.data.loader import load_splits
from maekit.data.transforms import normalize
from maekit.engine import checkpoint
from maekit.errors import MaekitError
from maekit.interop import hf
from maekit.models.mae import MAE, ModelConfig
from maekit.runs import load_run

from conftest import TINY

THREADS = ["train.threads=1"]


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(
        img_size=[28, 28],
        in_chans=1,
        patch_size=7,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
        norm_eps=1e-6,
    )
    return ModelConfig(**(base | kw))


def random_mae(cfg: ModelConfig, seed: int = 0) -> MAE:
    """A tiny MAE with every tensor random (biases, norms and mask token too, not just the initialisation)."""
    torch.manual_seed(seed)
    model = MAE(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("channels,norm_pix", [(1, False), (1, True), (3, False)])
def test_export_matches_transformers(tmp_path, channels, norm_pix):
    cfg = tiny_cfg(in_chans=channels, norm_pix_loss=norm_pix)
    model = random_mae(cfg)
    mean, std = [0.2, 0.3, 0.4][:channels], [0.25, 0.5, 0.125][:channels]
    out = hf.export_hf(tmp_path / "hf", cfg, model.state_dict(), mean, std)
    assert sorted(p.name for p in out.iterdir()) == sorted(hf.EXPORT_FILES)

    pre, info = ViTMAEForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    enc, info = ViTMAEModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    pre.eval(), enc.eval()
    assert pre.config.layer_norm_eps == 1e-6 and pre.config.norm_pix_loss is norm_pix

    x = torch.randn(5, channels, 28, 28)
    noise = torch.rand(5, cfg.num_patches, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss, pred, mask = model(x, noise=noise)
        ref = pre(pixel_values=x, noise=noise)
        latent, _, ids_restore = model.forward_encoder(x, noise=noise)
        ref_enc = enc(pixel_values=x, noise=noise)
    # measured: 0.0 for loss, pred and latent (same operations in the same order, sdpa attention)
    assert abs(loss.item() - ref.loss.item()) <= 1e-5
    assert (pred - ref.logits).abs().max().item() <= 1e-5
    assert torch.equal(mask, ref.mask) and torch.equal(ids_restore, ref.ids_restore)
    assert (latent - ref_enc.last_hidden_state).abs().max().item() <= 1e-5
    assert torch.equal(ref_enc.mask, mask)

    # the image processor does maekit's normalisation: x / 255, then (x - mean) / std per channel
    proc = ViTImageProcessor.from_pretrained(out)
    assert list(proc.image_mean) == mean and list(proc.image_std) == std
    imgs = torch.randint(0, 256, (3, channels, 28, 28), dtype=torch.uint8)
    pv = proc(images=[im.numpy() for im in imgs], return_tensors="pt", input_data_format="channels_first")[
        "pixel_values"
    ]
    assert (pv - normalize(imgs, torch.tensor(mean), torch.tensor(std))).abs().max().item() <= 1e-6


def test_round_trips_are_bitwise(tmp_path):
    # maekit -> HF -> maekit
    cfg = tiny_cfg(mask_ratio=0.6)
    model = random_mae(cfg, seed=3)
    hf.export_hf(tmp_path / "a", cfg, model.state_dict(), [0.5], [0.25])
    cfg2, state, meta = hf.load_hf_vitmae(tmp_path / "a")
    assert cfg2 == cfg
    assert_same_state(model.state_dict(), state)
    assert meta["data"]["mean"] == [0.5] and meta["data"]["std"] == [0.25]

    # HF (a model saved by transformers itself, with its own weight names) -> maekit -> HF
    hcfg = ViTMAEConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        image_size=28,
        patch_size=7,
        num_channels=3,
        norm_pix_loss=True,
        mask_ratio=0.5,
    )
    torch.manual_seed(0)
    original = ViTMAEForPreTraining(hcfg).eval()
    with torch.no_grad():
        for p in original.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    original.save_pretrained(tmp_path / "native")
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        cfg3, state3, meta3 = hf.load_hf_vitmae(tmp_path / "native")  # mean zeros, std ones
    assert (cfg3.embed_dim, cfg3.decoder_embed_dim, cfg3.mlp_ratio, cfg3.norm_eps, cfg3.in_chans) == (
        32,
        16,
        2.0,
        1e-12,
        3,
    )
    assert (
        meta3["data"]["mean"] == [0.0] * 3
        and meta3["data"]["std"] == [1.0] * 3
        and "preprocessor_config" in meta3["data"]["note"]
    )
    mae = MAE(cfg3).eval()
    checkpoint.load_weights(mae, state3, "native")
    hf.export_hf(tmp_path / "b", cfg3, mae.state_dict(), [0.0] * 3, [1.0] * 3)
    back = ViTMAEForPreTraining.from_pretrained(tmp_path / "b").eval()
    assert_same_state(original.state_dict(), back.state_dict())
    _, state4, _ = hf.load_hf_vitmae(tmp_path / "b")
    assert_same_state(state3, state4)
    x, noise = torch.randn(2, 3, 28, 28), torch.rand(2, 16)
    with torch.no_grad():
        loss, pred, mask = mae(x, noise=noise)
        ref = original(pixel_values=x, noise=noise)
    assert abs(loss.item() - ref.loss.item()) <= 1e-5 and (pred - ref.logits).abs().max().item() <= 1e-5
    assert torch.equal(mask, ref.mask)


def test_no_qkv_bias_and_encoder_only(tmp_path):
    cfg = tiny_cfg(qkv_bias=False)
    model = random_mae(cfg)
    hf.export_hf(tmp_path / "hf", cfg, model.state_dict(), [0.5], [0.5])
    pre, info = ViTMAEForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    _, state, _ = hf.load_hf_vitmae(tmp_path / "hf")
    assert_same_state(model.state_dict(), state)
    # a ViTMAEModel directory (encoder only): the encoder's tensors, enough for linprobe / finetune / knn
    ViTMAEModel.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "enc")
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        _, enc_state, meta = hf.load_hf_vitmae(tmp_path / "enc")
    assert meta["encoder_only"] and enc_state.keys() == {k for k in state if k.startswith("encoder.")}
    for k in enc_state:
        assert torch.equal(enc_state[k], state[k]), k


def test_cross_attention_decoder_exports_its_encoder_as_a_vitmae_model(tmp_path):
    # CrossMAE's decoder blocks have no ViTMAEForPreTraining counterpart: the export is the encoder, which
    # transformers loads with nothing missing or left over and which computes maekit's features
    cfg = tiny_cfg(decoder_attention="cross")
    model = random_mae(cfg)
    hf.export_hf(tmp_path / "hf", cfg, model.state_dict(), [0.5], [0.5])
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["ViTMAEModel"]
    enc, info = ViTMAEModel.from_pretrained(tmp_path / "hf", mask_ratio=0.0, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    x = torch.randn(2, cfg.in_chans, *cfg.img_size)
    ours = model.eval().encoder.forward_features(x)
    theirs = enc.eval()(x, noise=torch.arange(model.num_patches).float().expand(2, -1)).last_hidden_state
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_bad_hf_directories(tmp_path):
    cfg = tiny_cfg()
    hf.export_hf(tmp_path / "hf", cfg, random_mae(cfg).state_dict(), [0.5], [0.5])
    conf = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps(conf | {"hidden_size": 64}))
    with pytest.raises(MaekitError, match="maekit uses one mlp_ratio for encoder and decoder"):
        hf.load_hf_vitmae(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(conf | {"hidden_size": 64, "intermediate_size": 256}))
    with pytest.raises(MaekitError, match=r"does not fit its config.json \(shape mismatch: encoder\."):
        hf.load_hf_vitmae(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(conf | {"model_type": "vit"}))
    with pytest.raises(MaekitError, match="type 'vit'; maekit reads only 'vit_mae'"):
        load_run(tmp_path / "hf")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(conf))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(MaekitError, match="never unpickles"):
        load_run(pickled)


# ---------------------------------------------------------------- through the command line


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, fmnist_small):
    out = tmp_path_factory.mktemp("pre") / "run"
    args = [
        f"data.path={fmnist_small}",
        *TINY,
        *THREADS,
        "train.batch_size=64",
        "train.eval_samples=64",
        "train.progress=false",
        "train.epochs=1",
    ]
    assert main(["pretrain", f"out={out}", *args]) == 0
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, pretrained_run):
    out = tmp_path_factory.mktemp("export") / "hf"
    assert main(["export", str(pretrained_run), "--format", "hf", str(out)]) == 0
    return out


def test_cli_export(pretrained_run, exported, tmp_path, capsys):
    assert sorted(p.name for p in exported.iterdir()) == sorted(hf.EXPORT_FILES)
    run = load_run(pretrained_run)
    proc = ViTImageProcessor.from_pretrained(exported)
    assert list(proc.image_mean) == run.meta["data"]["mean"] and list(proc.image_std) == run.meta["data"]["std"]
    assert proc.do_rescale and not proc.do_resize and proc.size.height == 28 and proc.size.width == 28
    model = ViTMAEForPreTraining.from_pretrained(exported)
    assert (
        model.config.hidden_size == 32
        and model.config.patch_size == 7
        and model.config.mask_ratio == run.model_cfg.mask_ratio
    )
    # load_run on the export: the same architecture, weights and normalisation, and the run's data config
    back = load_run(exported)
    assert back.model_cfg == dataclasses.replace(run.model_cfg, preset=None)
    assert_same_state(run.state, back.state)
    assert (
        back.meta["data"]["mean"] == run.meta["data"]["mean"]
        and back.meta["data"]["config"] == run.meta["data"]["config"]
    )
    # re-exporting over a previous export replaces it; anything else in the way is an error
    again = tmp_path / "again"
    assert main(["export", str(pretrained_run), str(again), "--format", "hf"]) == 0
    assert main(["export", str(pretrained_run), str(again)]) == 0
    assert sorted(p.name for p in again.iterdir()) == sorted(hf.EXPORT_FILES)
    capsys.readouterr()
    (again / "notes.txt").write_text("mine")
    assert main(["export", str(pretrained_run), str(again)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maekit: error: ") and "not a maekit export" in err
    assert (again / "notes.txt").read_text() == "mine" and not list(tmp_path.glob(".again*"))


def test_downstream_and_pretrain_init_accept_hf_dir(tmp_path, fmnist_small, pretrained_run, exported):
    down = [f"data.path={fmnist_small}", *THREADS, "train.progress=false", "train.eval_samples=100", "labels=100"]
    assert main(["knn", f"pretrained={pretrained_run}", f"out={tmp_path / 'knn_run'}", *down]) == 0
    assert main(["knn", f"pretrained={exported}", f"out={tmp_path / 'knn_hf'}", *down]) == 0
    a = json.loads((tmp_path / "knn_run" / "result.json").read_text())
    b = json.loads((tmp_path / "knn_hf" / "result.json").read_text())
    assert a["test_accuracy"] == b["test_accuracy"] and a["val_accuracy"] == b["val_accuracy"]  # identical features
    assert (
        main(
            [
                "finetune",
                f"pretrained={exported}",
                f"out={tmp_path / 'ft'}",
                "train.epochs=1",
                "train.batch_size=32",
                *down,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "finetune",
                f"pretrained={pretrained_run}",
                f"out={tmp_path / 'ft_run'}",
                "train.epochs=1",
                "train.batch_size=32",
                *down,
            ]
        )
        == 0
    )
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("ft", "ft_run"))
    # the same weights fine-tuned
    assert a["test_accuracy"] == b["test_accuracy"] and a["val_accuracy"] == b["val_accuracy"]
    # pretrain init=HF_DIR starts from the exported weights
    pre = [
        f"data.path={fmnist_small}",
        *TINY,
        *THREADS,
        "train.batch_size=64",
        "train.eval_samples=64",
        "train.progress=false",
    ]
    assert main(["pretrain", f"out={tmp_path / 'init'}", f"init={exported}", "train.epochs=1", *pre]) == 0
    tensors, _ = checkpoint.load(tmp_path / "init" / "checkpoints" / "last.safetensors")
    ref = load_run(exported).state
    assert torch.equal(tensors["model.encoder.pos_embed"], ref["encoder.pos_embed"])
    moved = (
        (tensors["model.encoder.blocks.0.mlp.fc1.weight"] - ref["encoder.blocks.0.mlp.fc1.weight"]).abs().max().item()
    )
    assert 0 < moved < 1e-2  # a few small warm-up steps away from the exported weights, not a fresh initialisation


def test_cli_embed(tmp_path, fmnist_small, pretrained_run, exported, capsys):
    out = tmp_path / "feats.npy"
    assert (
        main(["embed", str(pretrained_run), "--split", "test", "--pool", "mean", "--out", str(out), "--threads", "1"])
        == 0
    )
    feats, labels = np.load(out), np.load(tmp_path / "feats_labels.npy")
    assert (
        feats.shape == (300, 32) and feats.dtype == np.float32 and labels.shape == (300,) and np.isfinite(feats).all()
    )
    # the same features from the export (its metadata carry the run's data config) and a data.* override
    out2 = tmp_path / "hf_feats.npy"
    assert main(["embed", str(exported), f"data.path={fmnist_small}", "--out", str(out2), "--threads", "1"]) == 0
    assert np.array_equal(np.load(out2), feats)
    assert (
        main(
            [
                "embed",
                str(pretrained_run),
                "--split",
                "val",
                "--pool",
                "cls",
                "--out",
                str(tmp_path / "v.npy"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "v.npy").shape == (60, 32)
    # the features are what transformers computes: ViTMAEModel with nothing masked, patch tokens in order
    enc = ViTMAEModel.from_pretrained(exported, mask_ratio=0.0).eval()
    run = load_run(pretrained_run)
    imgs = load_splits(DataConfig(path=str(fmnist_small))).test.images[:16]
    with torch.no_grad():
        h = enc(
            pixel_values=normalize(imgs, run.mean, run.std), noise=torch.arange(16.0).expand(16, -1)
        ).last_hidden_state
    assert np.abs(h[:, 1:].mean(1).numpy() - feats[:16]).max() <= 1e-5
    # a directory transformers wrote itself records no data config: data.* overrides are required
    ViTMAEForPreTraining.from_pretrained(exported).save_pretrained(tmp_path / "native")
    capsys.readouterr()
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        assert main(["embed", str(tmp_path / "native"), "--out", str(tmp_path / "n.npy")]) == 2
    assert "pass data.* overrides" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "native"), "model.depth=3"]) == 2
    assert "only data.* overrides" in capsys.readouterr().err


def test_non_square_export_is_a_one_line_error(tmp_path, capsys):
    cfg = tiny_cfg(img_size=[28, 14])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"kind": "pretrain"}))
    meta = {
        "kind": "mae",
        "model_config": dataclasses.asdict(cfg),
        "data": {
            "mean": [0.5],
            "std": [0.25],
            "class_names": None,
            "image_size": [28, 14],
            "channels": 1,
            "config": {},
        },
    }
    checkpoint.save(run / "checkpoints" / "best.safetensors", random_mae(cfg).state_dict(), meta)
    assert load_run(run).model_cfg.img_size == [28, 14]
    out = tmp_path / "hf"
    assert main(["export", str(run), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maekit: error: ") and len(err.strip().splitlines()) == 1
    assert "28x14" in err and "square" in err
    assert not out.exists() and not list(tmp_path.glob(".hf*"))


def test_preprocessor_without_rescale_maps_to_maekit_normalisation(tmp_path):
    cfg = tiny_cfg()
    hf.export_hf(tmp_path / "hf", cfg, random_mae(cfg).state_dict(), [0.5], [0.25])
    pp = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    # (x - 127.5) / 63.75 on the 0-255 scale is (x / 255 - 0.5) / 0.25
    (tmp_path / "hf" / "preprocessor_config.json").write_text(
        json.dumps(pp | {"do_rescale": False, "image_mean": [127.5], "image_std": [63.75]})
    )
    run = load_run(tmp_path / "hf")
    assert run.meta["data"]["mean"] == pytest.approx([0.5]) and run.meta["data"]["std"] == pytest.approx([0.25])
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps(pp | {"image_mean": [0.1, 0.2, 0.3]}))
    with pytest.raises(MaekitError, match="3 image_mean and 1 image_std values for a 1-channel model"):
        load_run(tmp_path / "hf")
