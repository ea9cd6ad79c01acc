"""Data sources: every format from files written the way their producers write them, splits, streaming,
preprocessing, normalisation statistics, and the `maekit data` commands."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch

from maekit.cli import main
from maekit.config import DataConfig, PreprocessConfig, from_dict
from maekit.data.loader import load_splits, preparer, step_batches
from maekit.data.readers import HDF5Reader, open_readers
from maekit.data.stream import StreamedImages
from maekit.errors import MaekitError

import formats
from conftest import TINY


def cfg(**kw) -> DataConfig:
    c = from_dict(DataConfig, kw, prefix="data.")
    c.validate()
    return c


def all_images(splits) -> torch.Tensor:
    return torch.cat([s.images[:] for s in (splits.train, splits.val, splits.test)])


def rows_of(splits) -> np.ndarray:
    return np.concatenate([splits.rows[k] for k in ("train", "val", "test")])


def test_qg_hdf5_channels_last(tmp_path):
    x = formats.write_qg_hdf5(tmp_path / "qg.h5", n=20)
    s = load_splits(cfg(source="hdf5", path=str(tmp_path / "qg.h5")))
    assert s.channels == 3 and s.image_size == (125, 125) and s.dtype == "float32"
    assert len(s.train) + len(s.val) + len(s.test) == 20 and len(s.test) == 2 and len(s.val) == 2
    assert sorted(rows_of(s).tolist()) == list(range(20))  # a partition of the file
    # every split holds exactly the file's images at its rows, channels first
    for name in ("train", "val", "test"):
        got = getattr(s, name).images
        assert torch.equal(got, torch.from_numpy(x[s.rows[name]].transpose(0, 3, 1, 2)))
        assert torch.equal(getattr(s, name).labels, torch.from_numpy((s.rows[name] % 2).astype(np.int64)))


def test_split_is_seeded(tmp_path):
    formats.write_qg_hdf5(tmp_path / "qg.h5", n=30, size=20)
    a = load_splits(cfg(source="hdf5", path=str(tmp_path / "qg.h5")))
    b = load_splits(cfg(source="hdf5", path=str(tmp_path / "qg.h5")))
    c = load_splits(cfg(source="hdf5", path=str(tmp_path / "qg.h5"), split_seed=5))
    assert all(np.array_equal(a.rows[k], b.rows[k]) for k in a.rows)
    assert not np.array_equal(a.rows["test"], c.rows["test"])


def test_task3d_layout_and_channel_selection(tmp_path):
    x = formats.write_task3d_hdf5(tmp_path / "t3d.h5", n=10)
    s = load_splits(cfg(source="hdf5", path=str(tmp_path / "t3d.h5"), channels=[3, 4, 0], test_fraction=0.2))
    assert s.channels == 3
    assert torch.equal(s.train.images, torch.from_numpy(x[s.rows["train"]][..., [3, 4, 0]].transpose(0, 3, 1, 2)))
    assert s.train.labels is not None  # Y (N, 1) flattened
    formats.write_task3d_hdf5(tmp_path / "unl.h5", n=6, labelled=False)
    u = load_splits(cfg(source="hdf5", path=str(tmp_path / "unl.h5"), test_fraction=0.2))
    assert u.train.labels is None and u.channels == 8


def test_center_crop(tmp_path):
    x = formats.write_qg_hdf5(tmp_path / "qg.h5", n=10, size=125)
    s = load_splits(cfg(source="hdf5", path=str(tmp_path / "qg.h5"), crop=64, test_fraction=0.2))
    assert s.image_size == (64, 64)
    assert torch.equal(s.test.images, torch.from_numpy(x[s.rows["test"], 30:94, 30:94].transpose(0, 3, 1, 2)))


def test_boosted_top_splits_from_the_file(tmp_path):
    x = formats.write_boosted_top_hdf5(tmp_path / "top.h5", sizes=(12, 4, 6))
    s = load_splits(cfg(source="hdf5", path=str(tmp_path / "top.h5")))
    assert (len(s.train), len(s.val), len(s.test)) == (12, 4, 6)
    assert torch.equal(s.val.images, torch.from_numpy(x["validation"].transpose(0, 3, 1, 2)))
    assert s.test.labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_layout_detection_and_override(tmp_path):
    import h5py

    with h5py.File(tmp_path / "cf.h5", "w") as f:  # channels-first
        f["images"] = np.random.default_rng(0).random((6, 2, 32, 32), dtype=np.float32)
    assert load_splits(cfg(source="hdf5", path=str(tmp_path / "cf.h5"), test_fraction=0.2)).channels == 2
    with h5py.File(tmp_path / "amb.h5", "w") as f:  # [6, 4, 16, 4]: 4 channels of 16x4, or 4x16 with 4 channels?
        f["images"] = np.zeros((6, 4, 16, 4), dtype=np.float32)
    with pytest.raises(MaekitError, match=r"cannot tell the channel axis of shape \[6, 4, 16, 4\]; set data.layout"):
        load_splits(cfg(source="hdf5", path=str(tmp_path / "amb.h5")))
    assert load_splits(
        cfg(source="hdf5", path=str(tmp_path / "amb.h5"), layout="nchw", test_fraction=0.2)
    ).image_size == (16, 4)
    assert load_splits(
        cfg(source="hdf5", path=str(tmp_path / "amb.h5"), layout="nhwc", test_fraction=0.2)
    ).image_size == (4, 16)


@pytest.mark.parametrize("key", ["X_jets", "X_jets_LR"])
def test_parquet_row_groups(tmp_path, key):
    x = formats.write_qg_parquet(tmp_path / "qg.parquet", n=20, size=16, row_group=6, key=key)
    readers = open_readers(tmp_path / "qg.parquet", cfg(source="parquet", path=str(tmp_path / "qg.parquet")))
    r = readers["train"]
    assert r.key == key and r.shape == (3, 16, 16) and r.chunk_starts.tolist() == [0, 6, 12, 18, 20]
    assert np.array_equal(r.read(4, 15), x[4:15])  # across row groups
    s = load_splits(cfg(source="parquet", path=str(tmp_path / "qg.parquet")))
    assert torch.equal(all_images(s), torch.from_numpy(x[rows_of(s)]))
    streamed = load_splits(cfg(source="parquet", path=str(tmp_path / "qg.parquet"), stream=True, memory_mb=0.001))
    assert streamed.train.streamed and streamed.train.images.capacity == 2  # two row groups at a time
    assert torch.equal(all_images(streamed), all_images(s)) and torch.allclose(streamed.mean, s.mean)
    assert sorted(torch.cat([s.train.labels, s.val.labels, s.test.labels]).tolist()) == [0] * 10 + [1] * 10


def test_npy_and_npz(tmp_path, fmnist_full):
    images, labels = fmnist_full["train"]
    np.save(tmp_path / "x.npy", images[:50])
    np.save(tmp_path / "y.npy", labels[:50])
    s = load_splits(cfg(source="npy", path=str(tmp_path / "x.npy"), labels_path=str(tmp_path / "y.npy")))
    assert s.dtype == "uint8" and s.channels == 1
    assert torch.equal(s.train.labels, torch.from_numpy(labels[:50][s.rows["train"]].astype(np.int64)))
    np.savez(tmp_path / "d.npz", images=images[:40, None], labels=labels[:40])
    z = load_splits(cfg(source="npy", path=str(tmp_path / "d.npz")))
    assert torch.equal(all_images(z)[:, 0], torch.from_numpy(images[:40][rows_of(z)]))


def _rgb32(images: np.ndarray) -> np.ndarray:
    """Fashion-MNIST images padded to 32x32 and tinted into 3 channels: real content in CIFAR's shape."""
    x = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.stack([x, (x * 0.7).astype(np.uint8), 255 - x], axis=1)


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_python_folder(tmp_path, fmnist_full, hundred):
    images, labels = fmnist_full["train"]
    x = _rgb32(images[:70])
    y = labels[:70].astype(np.int64)
    formats.write_cifar(tmp_path / "c", x, y, per_batch=12, test=10, hundred=hundred)
    s = load_splits(cfg(source="cifar", path=str(tmp_path / "c")))
    n_train = 60
    assert len(s.train) + len(s.val) == n_train and len(s.test) == 10
    assert torch.equal(s.test.images, torch.from_numpy(x[n_train:]))
    assert s.class_names[0] == ("class0" if hundred else "airplane") and s.channels == 3


def test_cifar_refuses_other_pickles(tmp_path, fmnist_full):
    images, labels = fmnist_full["train"]
    formats.write_cifar(tmp_path / "c", _rgb32(images[:70]), labels[:70].astype(np.int64), per_batch=12, test=10)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "c" / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(
        MaekitError, match=r"data_batch_3: not a CIFAR batch \(refusing to load (__builtin__|builtins).print\)"
    ):
        load_splits(cfg(source="cifar", path=str(tmp_path / "c")))


def test_image_folders(tmp_path, fmnist_full, capsys):
    images, labels = fmnist_full["train"]
    names = ["tshirt", "trouser", "pullover"]
    keep = np.nonzero(labels < 3)[0][:30]
    formats.write_image_folder(tmp_path / "lab", images[keep][:, None], labels[keep], names)
    (tmp_path / "lab" / "trouser" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    s = load_splits(cfg(source="folder", path=str(tmp_path / "lab"), image_size=24))
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out
    assert s.class_names == sorted(names) and s.channels == 1 and s.image_size == (24, 24)
    assert len(s.train) + len(s.val) + len(s.test) == 30
    # PNG files round-trip exactly at their own size
    t = load_splits(cfg(source="folder", path=str(tmp_path / "lab"), color="L"))
    png = [i for i in range(len(t.train)) if True]
    assert t.image_size == (28, 28) and len(png) == len(t.train)
    with pytest.raises(MaekitError, match=r"broken.png: cannot decode the image \(1 unreadable file\(s\)"):
        load_splits(cfg(source="folder", path=str(tmp_path / "lab"), on_bad_image="error"))
    formats.write_image_folder(tmp_path / "unl", _rgb32(images[:12]), None)
    u = load_splits(cfg(source="folder", path=str(tmp_path / "unl")))
    assert u.train.labels is None and u.channels == 3 and len(u.train) + len(u.val) + len(u.test) == 12


def test_folder_pixels_match_the_files(tmp_path, fmnist_full):
    images, labels = fmnist_full["train"]
    formats.write_image_folder(tmp_path / "lab", images[:8, None], labels[:8] % 2)
    s = load_splits(cfg(source="folder", path=str(tmp_path / "lab"), test_path=str(tmp_path / "lab")))
    # labelled folder as its own test set: every PNG decodes to its original pixels (JPEGs are lossy)
    from maekit.data.folder import list_images

    files = list_images(tmp_path / "lab")
    for i, f in enumerate(files):
        if f.suffix == ".png":
            orig = int(f.stem)
            assert torch.equal(s.test.images[i, 0], torch.from_numpy(images[orig].copy()))


def test_preprocessing():
    pre = from_dict(
        PreprocessConfig, {"zero_suppress": 1e-3, "scale": [2.0, 0.5], "log1p": True, "clip": [0, 2]}, prefix="p."
    )
    x = np.array([[[[5e-4, 1.0]], [[3.0, 100.0]]]], dtype=np.float32)  # [1, 2, 1, 2]
    y = preparer(pre, "f", 2)(x, 0, 1)
    want = np.clip(np.log1p(np.array([[[[0.0, 2.0]], [[1.5, 50.0]]]])), 0, 2)
    assert np.allclose(y, want)
    with pytest.raises(MaekitError, match="image 3 holds NaN or Inf"):
        preparer(PreprocessConfig(), "f.h5: X_jets", 2)(np.array([[[[0.0]], [[np.inf]]]], dtype=np.float32), 3, 4)


def test_vertical_flip_mirrors_rows_and_leaves_other_runs_alone():
    from maekit.data.transforms import random_resized_crop_flip

    x = torch.randn(64, 2, 6, 5)
    out = random_resized_crop_flip(x, torch.Generator().manual_seed(0), (1, 1), (1, 1), hflip=False, vflip=True)
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    mirrored = [torch.allclose(o, i.flip(-2), atol=1e-5) for o, i in zip(out, x)]
    assert all(a != b for a, b in zip(same, mirrored)) and 16 < sum(mirrored) < 48
    # without vflip the generator is drawn exactly as before the option existed (5 draws per image)
    g, ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    random_resized_crop_flip(x, g, (0.5, 1), (0.8, 1.2), hflip=True)
    torch.rand(5 * 64, generator=ref)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=ref))


def test_stats_match_direct_computation(tmp_path):
    x = formats.write_qg_hdf5(tmp_path / "qg.h5", n=40, size=20)
    for stream in (False, True):
        s = load_splits(
            cfg(source="hdf5", path=str(tmp_path / "qg.h5"), stream=stream, memory_mb=0.01, preprocess={"log1p": True})
        )
        ref = np.log1p(x[s.rows["train"]].astype(np.float64))
        assert np.allclose(s.mean.numpy(), ref.mean(axis=(0, 1, 2)), rtol=1e-5)
        assert np.allclose(s.std.numpy(), ref.std(axis=(0, 1, 2)), rtol=1e-4)
        assert s.train.streamed == stream


def test_streamed_reads_match_and_memory_is_bounded(tmp_path):
    x = formats.write_qg_hdf5(tmp_path / "qg.h5", n=64, size=20, chunks=True)
    c = cfg(source="hdf5", path=str(tmp_path / "qg.h5"))
    r = HDF5Reader(tmp_path / "qg.h5", "X_jets", c, "y")
    rows = np.arange(3, 61)
    unit_bytes = int(np.diff(r.chunk_starts).max()) * 3 * 20 * 20 * 4
    s = StreamedImages(r, rows, preparer(c.preprocess, r.where, 3), cache_bytes=4 * unit_bytes)
    assert s.capacity == 4 and s.buffer_units == 2
    idx = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:17]
    assert torch.equal(s[idx], torch.from_numpy(x[rows[idx.numpy()]].transpose(0, 3, 1, 2)))
    assert torch.equal(s[5:9], torch.from_numpy(x[rows[5:9]].transpose(0, 3, 1, 2)))
    assert len(s._cache) <= s.capacity


@pytest.mark.parametrize("world", [1, 2])
def test_streamed_epoch_visits_every_image_once(tmp_path, world):
    formats.write_qg_hdf5(tmp_path / "qg.h5", n=64, size=20, chunks=True)
    c = cfg(source="hdf5", path=str(tmp_path / "qg.h5"))
    r = HDF5Reader(tmp_path / "qg.h5", "X_jets", c, "y")
    rows = np.arange(64)
    s = StreamedImages(r, rows, preparer(c.preprocess, r.where, 3), cache_bytes=0)
    units = (s.chunk_of, s.buffer_units)
    for epoch in range(2):
        seen = torch.cat(
            [step_batches(64, 8 // world, epoch, 0, rank, world, units).flatten() for rank in range(world)]
        )
        assert sorted(seen.tolist()) == list(range(64))
        one = step_batches(64, 8, epoch, 0, 0, 1, units)
        # the same order whatever the number of processes, and the read units come in shuffled order
        assert torch.equal(
            torch.cat([step_batches(64, 8 // world, epoch, 0, rk, world, units) for rk in range(world)], dim=1)
            .sort(dim=1)
            .values,
            one.sort(dim=1).values,
        )
    first = step_batches(64, 8, 0, 0, 0, 1, units).flatten()
    second = step_batches(64, 8, 1, 0, 0, 1, units).flatten()
    assert not torch.equal(first, second)
    # reading an epoch in that order touches each read unit once or twice, not once per batch
    s.reads = 0
    for b in step_batches(64, 8, 0, 0, 0, 1, units):
        s[b]
    assert s.reads <= 2 * (len(r.chunk_starts) - 1)


def test_pretrain_streamed_from_hdf5_then_finetune_on_a_labelled_file(tmp_path):
    formats.write_task3d_hdf5(tmp_path / "unlabelled.h5", n=48, size=20, labelled=False)
    formats.write_task3d_hdf5(tmp_path / "labelled.h5", n=40, size=20, labelled=True, seed=3)
    small = [
        *TINY,
        "model.patch_size=5",
        "train.batch_size=8",
        "train.eval_samples=8",
        "train.progress=false",
        "train.epochs=1",
    ]
    pre = tmp_path / "pre"
    assert (
        main(
            [
                "pretrain",
                f"out={pre}",
                "data.source=hdf5",
                f"data.path={tmp_path / 'unlabelled.h5'}",
                "data.stream=true",
                "data.memory_mb=0.05",
                "data.preprocess.log1p=true",
                *small,
            ]
        )
        == 0
    )
    z = np.load(pre / "splits.npz")
    assert sorted(np.concatenate([z["train_rows"], z["val_rows"], z["test_rows"]]).tolist()) == list(range(48))
    meta = json.loads((pre / "run.json").read_text())
    assert meta["kind"] == "pretrain"
    # float data export to transformers without the 1/255 rescale, and come back with the run's own statistics
    from maekit.runs import load_run

    assert main(["export", str(pre), str(tmp_path / "hf")]) == 0
    pp = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    run, back = load_run(pre, "best"), load_run(tmp_path / "hf", "best")
    assert pp["do_rescale"] is False and pp["image_mean"] == pytest.approx(run.meta["data"]["mean"])
    assert (
        back.meta["data"]["mean"] == pytest.approx(run.meta["data"]["mean"]) and back.meta["data"]["dtype"] == "float32"
    )
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                f"pretrained={pre}",
                f"out={ft}",
                "data.source=hdf5",
                f"data.path={tmp_path / 'labelled.h5'}",
                "data.preprocess.log1p=true",
                "train.batch_size=8",
                "train.progress=false",
                "train.epochs=1",
            ]
        )
        == 0
    )
    assert json.loads((ft / "result.json").read_text())["test_images"] == 4
    zf = np.load(ft / "splits.npz")
    assert str(zf["train_source"]) == f"{(tmp_path / 'labelled.h5').resolve()}: jet" and len(zf["test_rows"]) == 4


def test_a_test_split_of_pretraining_images_is_refused(tmp_path, capsys):
    """The file cuts its own test split: a downstream run with another split_seed would test on pretraining images."""
    formats.write_task3d_hdf5(tmp_path / "t.h5", n=40, size=20, labelled=True)
    small = [
        *TINY,
        "model.patch_size=5",
        "train.batch_size=8",
        "train.eval_samples=8",
        "train.progress=false",
        "train.epochs=1",
    ]
    data = ["data.source=hdf5", f"data.path={tmp_path / 't.h5'}", "data.test_fraction=0.25"]
    pre = tmp_path / "pre"
    assert main(["pretrain", f"out={pre}", *data, *small]) == 0
    knn = ["knn", f"pretrained={pre}", *data, "train.progress=false", "knn_k=3"]
    capsys.readouterr()
    assert main([*knn, f"out={tmp_path / 'other_seed'}", "data.split_seed=1"]) == 2
    err = capsys.readouterr().err
    seen = set(np.load(pre / "splits.npz")["train_rows"].tolist())
    other = load_splits(DataConfig(source="hdf5", path=str(tmp_path / "t.h5"), test_fraction=0.25, split_seed=1))
    overlap = len(seen & set(other.rows["test"].tolist()))
    assert overlap > 0 and re.search(
        rf"{overlap} of the 10 test images \(.*t.h5: jet\) were pretraining images of .*pre "
        r"\(pretrained with data.path=.*t.h5, test_path=None, split_seed=0, test_fraction=0.25; "
        r"this run has data.path=.*t.h5, test_path=None, split_seed=1, test_fraction=0.25\); "
        r"use the pretraining's split settings, or pass allow_test_overlap=true",
        err,
    ), err
    assert not (tmp_path / "other_seed").exists()  # refused before any output
    # the pretraining's own split, or an explicit override, runs
    assert main([*knn, f"out={tmp_path / 'same_split'}"]) == 0
    assert main([*knn, f"out={tmp_path / 'forced'}", "data.split_seed=1", "allow_test_overlap=true"]) == 0


def test_channel_count_against_the_checkpoint(tmp_path, capsys):
    formats.write_task3d_hdf5(tmp_path / "t.h5", n=32, size=20, labelled=True)
    small = [
        *TINY,
        "model.patch_size=5",
        "train.batch_size=8",
        "train.eval_samples=8",
        "train.progress=false",
        "train.epochs=1",
    ]
    pre = tmp_path / "pre"
    assert main(["pretrain", f"out={pre}", "data.source=hdf5", f"data.path={tmp_path / 't.h5'}", *small]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "finetune",
                f"pretrained={pre}",
                f"out={tmp_path / 'ft'}",
                "data.source=hdf5",
                f"data.path={tmp_path / 't.h5'}",
                "data.channels=[0,1,2]",
                "train.progress=false",
            ]
        )
        == 2
    )
    assert re.search(
        r"encoder .*pre expects 8 channels of 20x20, but data .*t.h5: jet have 3 of 20x20", capsys.readouterr().err
    )


def test_data_inspect_and_preview(tmp_path, capsys):
    formats.write_qg_hdf5(tmp_path / "qg.h5", n=12, size=32)
    assert main(["data", "inspect", str(tmp_path / "qg.h5"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["source"] == "hdf5"
        and info["key"] == "X_jets"
        and info["layout"] == "nhwc"
        and info["shape"] == [3, 32, 32]
    )
    assert info["labels"] == {"0": 6, "1": 6} or info["labels"] == {0: 6, 1: 6}
    assert all(0 < c["nonzero"] < 0.2 for c in info["channels"])  # sparse
    assert main(["data", "inspect", str(tmp_path / "qg.h5"), "channel_names=[ECAL,HCAL,Tracks]"]) == 0
    assert "(Tracks)" in capsys.readouterr().out
    out = tmp_path / "p.png"
    assert main(["data", "preview", str(tmp_path / "qg.h5"), "--out", str(out), "--n", "3", "--log"]) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 200


def test_hostile_sizes_are_refused_before_allocation(tmp_path):
    """An image over twice Pillow's bomb limit (Pillow's own refusal) stops the run with the file's name, and an
    HDF5 file that would not fit in memory is refused with stream=false (and streams by default)."""
    import h5py

    from maekit.environment import available_memory
    from maekit.errors import MaekitError

    import formats

    formats.write_image_folder(
        tmp_path / "photos", np.full((4, 1, 20, 20), 128, dtype=np.uint8), np.array([0, 1, 0, 1])
    )
    formats.write_png_header(tmp_path / "photos" / "class0" / "huge.png", 20_000, 20_000)
    with pytest.raises(
        MaekitError,
        match=r"huge.png: image over Pillow's decompression-bomb limit \(Image size \(400000000 pixels\) exceeds",
    ):
        load_splits(DataConfig(source="folder", path=str(tmp_path / "photos")))
    n = int(available_memory() // (20 * 20 * 4)) + 1  # one image more than memory holds
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("X_jets", shape=(n, 20, 20), dtype="f4", chunks=(1, 20, 20))
    with pytest.raises(
        MaekitError,
        match=r"big.h5: X_jets: the images need [\d.]+ GiB in memory \(data.stream=false\), more than the "
        r"[\d.]+ GiB available; set data.stream=true to read them in blocks",
    ):
        load_splits(DataConfig(source="hdf5", path=str(tmp_path / "big.h5"), stream=False))


def _photos(root, n: int = 30) -> list:
    """n small RGB photos of two sizes (PNG and JPEG) in three classes, and one file that is no image at all."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        h, w = (30, 40) if i % 2 else (45, 33)  # landscape and portrait: both resized and cropped
        x = (rng.integers(0, 200, (h, w, 3)) + np.linspace(0, 55, w)[None, :, None]).astype(np.uint8)
        d = root / ("cat", "dog", "eel")[i % 3]
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{i:03d}.{'jpg' if i % 4 == 0 else 'png'}"
        Image.fromarray(x).save(p)
        paths.append(p)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return paths


def _h5(path) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        return {**{k: f[k][...] for k in f}, **{f"attr:{k}": f.attrs[k] for k in f.attrs}}


def test_pack_holds_the_folder_readers_pixels_labels_and_class_names(tmp_path, capsys):
    from maekit.data import folder, pack

    _photos(tmp_path / "photos")
    meta = pack.pack_folder(tmp_path / "photos", tmp_path / "p.h5", 24, workers=2, progress=False)
    out = capsys.readouterr().out
    assert "1 unreadable image file(s) skipped: dog/broken.jpg" in out  # listed, not fatal
    assert meta["bad"] == ["dog/broken.jpg"] and meta["images"] == 30 and meta["files"] == 31 and meta["color"] == "RGB"
    x, y, classes = folder.load(tmp_path / "photos", cfg(source="folder", path=str(tmp_path / "photos"), image_size=24))
    f = _h5(tmp_path / "p.h5")
    assert f["images"].shape == (30, 3, 24, 24) and np.array_equal(f["images"], x)  # the same pixels, in the same order
    assert np.array_equal(f["labels"], y) and json.loads(f["attr:class_names"]) == classes == ["cat", "dog", "eel"]
    # a run reads the pack in place of the folder: same splits, same images, same labels and class names
    plain = load_splits(cfg(source="folder", path=str(tmp_path / "photos"), image_size=24))
    packed = load_splits(
        cfg(source="folder", path=str(tmp_path / "photos"), image_size=24, pack=str(tmp_path / "p.h5"), stream=True)
    )
    assert packed.train.streamed and packed.class_names == plain.class_names
    assert torch.equal(all_images(packed), all_images(plain)) and np.array_equal(rows_of(packed), rows_of(plain))
    assert torch.equal(packed.train.labels, plain.train.labels) and torch.equal(packed.test.labels, plain.test.labels)
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out
    with pytest.raises(
        MaekitError, match=r"broken.jpg: cannot decode the image \(1 unreadable file\(s\) in .*photos\)"
    ):
        load_splits(
            cfg(source="folder", path=str(tmp_path / "photos"), pack=str(tmp_path / "p.h5"), on_bad_image="error")
        )


def test_pack_resumes_after_an_interruption_and_gives_the_same_file(tmp_path, monkeypatch, capsys):
    from maekit.data import pack

    _photos(tmp_path / "photos")
    monkeypatch.setattr(pack, "BLOCK", 4)
    write, calls = pack._write_block, []

    def dies_after_three_blocks(*a):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        write(*a)

    monkeypatch.setattr(pack, "_write_block", dies_after_three_blocks)
    with pytest.raises(KeyboardInterrupt):
        pack.pack_folder(tmp_path / "photos", tmp_path / "p.h5", 24, workers=2, progress=False)
    assert not (tmp_path / "p.h5").exists() and (tmp_path / "p.h5.partial").exists()  # nothing that looks complete
    assert json.loads((tmp_path / "p.h5.partial.json").read_text())["files_done"] == 12
    assert "the same command resumes from" in capsys.readouterr().out
    monkeypatch.setattr(pack, "_write_block", write)
    meta = pack.pack_folder(tmp_path / "photos", tmp_path / "p.h5", 24, workers=1, progress=False)
    assert "resuming" in capsys.readouterr().out and meta["decoded"] == 31 - 12
    assert not (tmp_path / "p.h5.partial").exists() and not (tmp_path / "p.h5.partial.json").exists()
    fresh = pack.pack_folder(tmp_path / "photos", tmp_path / "fresh.h5", 24, workers=2, progress=False)
    a, b = _h5(tmp_path / "p.h5"), _h5(tmp_path / "fresh.h5")
    assert fresh["decoded"] == 31 and a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_pack_refuses_a_changed_folder_and_another_size(tmp_path, capsys):
    from maekit.data import pack

    paths = _photos(tmp_path / "photos")
    pack.pack_folder(tmp_path / "photos", tmp_path / "p.h5", 24, workers=1, progress=False)
    c = dict(source="folder", path=str(tmp_path / "photos"), pack=str(tmp_path / "p.h5"))
    with pytest.raises(
        MaekitError,
        match=r"p.h5: packed at 24x24 pixels, expected 20x20 \(data.image_size\); re-pack with "
        r"`maekit data pack .*photos --out .*p.h5 --size 20 --force`",
    ):
        load_splits(cfg(**c, image_size=20))
    with pytest.raises(MaekitError, match=r"p.h5: packed at 24x24 pixels, expected 20x20 \(--size\)"):
        pack.pack_folder(tmp_path / "photos", tmp_path / "p.h5", 20, workers=1, progress=False)
    with pytest.raises(MaekitError, match=r"packed in colour mode RGB, expected L \(data.color\)"):
        load_splits(cfg(**c, color="L"))
    size = paths[3].stat().st_size
    paths[3].write_bytes(paths[3].read_bytes() + b"\0")
    (tmp_path / "photos" / "cat" / "new.png").write_bytes(paths[0].read_bytes())
    with pytest.raises(
        MaekitError,
        match=rf"p.h5: .*photos changed since it was packed \(cat/003.png changed \({size:,} -> {size + 1:,} "
        r"bytes\), and 1 more file\(s\) differ\); expected the 31 image files as packed; re-pack with",
    ):
        load_splits(cfg(**c))
    meta = pack.pack_folder(tmp_path / "photos", tmp_path / "p.h5", 24, workers=1, force=True, progress=False)
    assert meta["files"] == 32 and len(load_splits(cfg(**c)).train) > 0  # re-packed on request, then accepted


def test_pretrain_on_a_packed_folder(tmp_path, capsys):
    _photos(tmp_path / "photos", n=40)
    pk = tmp_path / "photos.h5"
    assert main(["data", "pack", str(tmp_path / "photos"), "--out", str(pk), "--size", "28", "--workers", "2"]) == 0
    assert f"data.pack={pk}" in capsys.readouterr().out
    pre = tmp_path / "pre"
    assert (
        main(
            [
                "pretrain",
                f"out={pre}",
                "data.source=folder",
                f"data.path={tmp_path / 'photos'}",
                f"data.pack={pk}",
                "data.image_size=28",
                "data.stream=true",
                "data.memory_mb=0.05",
                *TINY,
                "train.batch_size=8",
                "train.eval_samples=8",
                "train.progress=false",
                "train.epochs=1",
            ]
        )
        == 0
    )
    z = np.load(pre / "splits.npz")
    assert (
        str(z["train_source"]) == f"{pk.resolve()}: images"
        and len(z["train_rows"]) + len(z["val_rows"]) + len(z["test_rows"]) == 40
    )
    epochs = [r for r in map(json.loads, (pre / "metrics.jsonl").read_text().splitlines()) if "test_recon_loss" in r]
    assert len(epochs) == 1 and all(0 < r["train_recon_loss"] < 10 and r["img_per_s"] > 0 for r in epochs)
    assert (pre / "checkpoints" / "best.safetensors").exists()


def test_reconstruction_grid_of_class_folders_shows_every_class(tmp_path, monkeypatch):
    # a folder of class folders is read class by class: the grid must not show the first class only
    from maekit.commands import pretrain

    _photos(tmp_path / "train", n=12)
    _photos(tmp_path / "test", n=30)
    shown = []
    monkeypatch.setattr(pretrain, "write_recon_grid", lambda model, images, *a, **k: shown.append(images.clone()))
    c = [
        "data.source=folder",
        f"data.path={tmp_path / 'train'}",
        f"data.test_path={tmp_path / 'test'}",
        "data.image_size=14",
    ]
    assert (
        main(
            [
                "pretrain",
                f"out={tmp_path / 'pre'}",
                *c,
                *TINY,
                "train.batch_size=4",
                "train.eval_samples=64",
                "train.progress=false",
                "train.epochs=1",
            ]
        )
        == 0
    )
    test = load_splits(
        cfg(source="folder", path=str(tmp_path / "train"), test_path=str(tmp_path / "test"), image_size=14)
    ).test
    assert len(shown) == 1 and len(shown[0]) == 8
    rows = [next(i for i in range(len(test)) if torch.equal(test.images[i], x)) for x in shown[0]]
    assert set(test.labels[rows].tolist()) == {0, 1, 2}


def test_pack_of_a_separate_test_folder(tmp_path):
    from maekit.data import pack

    _photos(tmp_path / "train", n=12)
    _photos(tmp_path / "test", n=9)
    for name in ("train", "test"):
        pack.pack_folder(tmp_path / name, tmp_path / f"{name}.h5", 16, workers=1, progress=False)
    c = dict(source="folder", path=str(tmp_path / "train"), test_path=str(tmp_path / "test"), image_size=16)
    plain = load_splits(cfg(**c))
    packed = load_splits(cfg(**c, pack=str(tmp_path / "train.h5"), test_pack=str(tmp_path / "test.h5")))
    assert len(packed.test) == 9 and torch.equal(packed.test.images[:], plain.test.images[:])
    assert torch.equal(packed.test.labels, plain.test.labels) and torch.equal(all_images(packed), all_images(plain))
    assert packed.sources["test"].endswith("test.h5: images")
