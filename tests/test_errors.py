"""Every documented bad input (docs/errors.md) gets its one-line message, exit status 2, no traceback, and
leaves earlier outputs alone. Each case here is a row of the table in docs/errors.md (checked below)."""

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest

from maekit.cli import main

from conftest import TINY, write_idx

DOC = Path(__file__).parent.parent / "docs" / "errors.md"


def copy_data(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def case_args(name: str, tmp: Path, data: Path, pretrained: Path) -> list[str]:
    base = [f"data.path={data}", *TINY, "train.progress=false", "train.eval_samples=64", "train.batch_size=64"]
    out = f"out={tmp / 'out'}"
    if name == "missing-data-path":
        return ["pretrain", out, *TINY, f"data.path={tmp / 'nowhere'}"]
    if name == "data-not-found":
        return ["pretrain", out, *TINY, "data.name=kmnist"]
    if name == "unknown-dataset":
        return ["pretrain", out, *TINY, "data.name=cifar11"]
    if name == "unsupported-source":
        return ["pretrain", out, *base, "data.source=tfrecord"]
    if name == "corrupt-idx":
        bad = copy_data(data, tmp / "bad")
        raw = (bad / "train-images-idx3-ubyte.gz").read_bytes()
        (bad / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 3])
        return ["pretrain", out, *base, f"data.path={bad}"]
    if name == "truncated-idx":
        bad = copy_data(data, tmp / "bad")
        (bad / "t10k-labels-idx1-ubyte.gz").unlink()
        raw = np.zeros(300, dtype=np.uint8)
        write_idx(bad / "t10k-labels-idx1-ubyte", raw)
        path = bad / "t10k-labels-idx1-ubyte"
        path.write_bytes(path.read_bytes()[:-7])
        return ["pretrain", out, *base, f"data.path={bad}"]
    if name == "idx-huge-header":  # a gzip idx file whose header claims 10^9 images: refused before reading on
        bad = copy_data(data, tmp / "bad")
        with gzip.open(bad / "train-images-idx3-ubyte.gz", "wb") as f:
            f.write(
                bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in (10**9, 28, 28)) + bytes(784 * 4)
            )
        return ["pretrain", out, *base, f"data.path={bad}"]
    if name == "label-count-mismatch":
        bad = copy_data(data, tmp / "bad")
        write_idx(bad / "train-labels-idx1-ubyte.gz", np.zeros(10, dtype=np.uint8))
        return ["pretrain", out, *base, f"data.path={bad}"]
    if name == "patch-not-dividing":
        return ["pretrain", out, *base, "model.patch_size=5"]
    if name == "mask-ratio-out-of-range":
        return ["pretrain", out, *base, "model.mask_ratio=1.2"]
    if name == "mask-ratio-zero":
        return ["pretrain", out, *base, "model.mask_ratio=0"]
    if name == "hit-intensity-with-norm-pix":
        return ["pretrain", out, *base, "model.loss=hit_intensity", "model.norm_pix_loss=true"]
    if name == "hit-variance-without-hit-intensity":
        return ["pretrain", out, *base, "model.hit_variance=true"]
    if name == "heads-not-dividing":
        return ["pretrain", out, *base, "model.embed_dim=36", "model.num_heads=5"]
    if name == "unknown-key":
        return ["pretrain", out, *base, "train.epoch=3"]
    if name == "wrong-type":
        return ["pretrain", out, *base, "train.batch_size=big"]
    if name == "bad-choice":
        return ["pretrain", out, *base, "optim.schedule=linear"]
    if name == "unknown-preset":
        return ["pretrain", out, *base, "model.preset=vit-giant"]
    if name == "config-not-found":
        return ["pretrain", "-c", str(tmp / "missing.yaml")]
    if name == "config-not-yaml":
        (tmp / "bad.yaml").write_text("train: {epochs: 3\n")
        return ["pretrain", "-c", str(tmp / "bad.yaml")]
    if name == "batch-larger-than-data":
        return ["pretrain", out, *[a for a in base if not a.startswith("train.batch_size")], "train.batch_size=4096"]
    if name == "out-dir-not-empty":
        (tmp / "out").mkdir()
        (tmp / "out" / "notes.txt").write_text("mine")
        return ["pretrain", out, *base]
    if name == "resume-not-a-run":
        (tmp / "out").mkdir()
        (tmp / "out" / "notes.txt").write_text("mine")
        return ["pretrain", out, *base, "resume=true"]
    if name == "resume-other-kind":
        return ["finetune", f"out={pretrained}", "resume=true", f"pretrained={pretrained}", *base]
    if name == "pretrained-missing":
        return ["finetune", out, *base, f"pretrained={tmp / 'nope'}"]
    if name == "pretrained-not-a-run":
        (tmp / "plain").mkdir()
        return ["finetune", out, *base, f"pretrained={tmp / 'plain'}"]
    if name == "pickle-checkpoint":
        import shutil

        import torch

        fake = tmp / "fake"
        shutil.copytree(pretrained, fake)
        torch.save({"weights": [1, 2, 3]}, fake / "checkpoints" / "best.safetensors")
        (fake / "checkpoints" / "best.prev.safetensors").unlink(missing_ok=True)
        return ["finetune", out, *base, f"pretrained={fake}"]
    if name == "too-many-labels":
        return ["finetune", out, *base, f"pretrained={pretrained}", "labels=100000"]
    if name == "negative-labels":
        return ["finetune", out, *base, "labels=-5"]
    if name == "reconstruct-bad-mask":
        return ["reconstruct", str(pretrained), "--mask-ratio", "1.5"]
    if name == "reconstruct-zero-mask":
        return ["reconstruct", str(pretrained), "--mask-ratio", "0"]
    if name == "calibrate-without-hit-map":
        return ["calibrate", str(pretrained)]
    if name == "fp16-on-cpu":
        return ["pretrain", out, *base, "train.precision=fp16", "train.device=cpu"]
    if name == "batch-size-zero":
        return ["pretrain", out, *[a for a in base if not a.startswith("train.batch_size")], "train.batch_size=0"]
    if name == "compare-unknown-method":
        return ["compare", out, "methods=[finetune, svm]"]
    if name == "compare-changed-recipe":
        cmp = [
            f"pretrained={pretrained}",
            f"pretrain.data.path={data}",
            "budgets=[60]",
            "seeds=[0]",
            "methods=[knn]",
            "knn.train.progress=false",
        ]
        assert main(["compare", out, *cmp]) == 0
        return ["compare", out, *cmp, "knn.knn_k=5"]
    if name == "cnn-with-pretrained":
        return ["finetune", out, *base, "arch=cnn", f"pretrained={pretrained}"]
    if name == "pixel-knn-with-pretrained":
        return ["knn", out, *base, "features=pixels", f"pretrained={pretrained}"]
    if name == "negative-mixup":
        return ["finetune", out, *base, "mixup=-0.5"]
    if name == "patch-dropout-out-of-range":
        return ["finetune", out, *base, "patch_dropout=1.0"]
    if name == "decoder-keep-out-of-range":
        return ["pretrain", out, *base, "model.decoder_keep=0"]
    if name == "sweep-bad-grid":
        return ["sweep", out, *base, "--grid", "model.patch_size"]
    if name == "sweep-one-cell":
        return ["sweep", out, *base, "--grid", "model.mask_ratio=0.75"]
    if name == "report-not-a-run":
        (tmp / "plain").mkdir()
        return ["report", str(tmp / "plain")]
    if name == "jets-bad-window":
        return ["jets", "generate", "--out", str(tmp / "jets.h5"), "--pt-min", "600", "--pt-max", "500"]
    if name == "jets-unreachable-window":  # (the test lowers the give-up count from 50,000 to 300)
        return [
            "jets",
            "generate",
            "--out",
            str(tmp / "jets.h5"),
            "--n",
            "2",
            "--size",
            "15",
            "--workers",
            "1",
            "--pt-min",
            "3000",
            "--pt-max",
            "3050",
            "--pthat-min",
            "200",
            "--no-progress",
        ]
    if name == "test-images-pretrained":
        # an npz cuts its own test split: another split_seed downstream tests on images the encoder was pretrained on
        from maekit.data import idx

        images, labels = idx.load("fashion_mnist", str(data), download=False)["train"]
        np.savez(tmp / "f.npz", images=images[:200], labels=labels[:200])
        npz = ["data.source=npy", f"data.path={tmp / 'f.npz'}"]
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):  # the setup's epoch line is not the case's output
            assert main(["pretrain", f"out={tmp / 'pre'}", *npz, *base[1:], "train.epochs=1"]) == 0
        return ["knn", out, f"pretrained={tmp / 'pre'}", *npz, "data.split_seed=1", "train.progress=false"]
    return data_case_args(name, tmp, out, pretrained)


def data_case_args(name: str, tmp: Path, out: str, pretrained: Path) -> list[str]:
    """Bad data files, written in the real formats (tests/formats.py) and then broken."""
    import h5py

    import formats

    h5 = tmp / "jets.h5"
    formats.write_qg_hdf5(h5, n=12, size=20)
    small = [
        *TINY,
        "model.patch_size=5",
        "train.batch_size=4",
        "train.eval_samples=4",
        "train.progress=false",
        "train.epochs=1",
    ]
    jets = ["data.source=hdf5", f"data.path={h5}", *small]
    if name == "hdf5-missing-key":
        return ["pretrain", out, *jets, "data.images_key=images"]
    if name == "hdf5-wrong-rank":
        with h5py.File(h5, "w") as f:
            f["X_jets"] = np.zeros((12, 400), dtype=np.float32)
        return ["pretrain", out, *jets]
    if name == "hdf5-nan":
        with h5py.File(h5, "a") as f:
            f["X_jets"][7, 3, 3, 1] = np.nan
        return ["pretrain", out, *jets]
    if name == "hdf5-label-mismatch":
        with h5py.File(h5, "a") as f:
            del f["y"]
            f["y"] = np.zeros(9, dtype=np.float32)
        return ["pretrain", out, *jets]
    if name == "hdf5-truncated":
        raw = h5.read_bytes()
        h5.write_bytes(raw[: len(raw) // 2])
        return ["pretrain", out, *jets]
    if name == "hdf5-empty":
        with h5py.File(h5, "w") as f:
            f["X_jets"] = np.zeros((0, 20, 20, 3), dtype=np.float32)
        return ["pretrain", out, *jets]
    if name == "parquet-truncated":
        pq = tmp / "jets.parquet"
        formats.write_qg_parquet(pq, n=6, size=20)
        pq.write_bytes(pq.read_bytes()[:-100])
        return ["pretrain", out, "data.source=parquet", f"data.path={pq}", *small]
    if name == "channels-vs-config":
        return ["pretrain", out, *jets, "model.in_chans=8"]
    if name == "channels-vs-checkpoint":
        return ["finetune", out, f"pretrained={pretrained}", *jets]
    if name == "channel-out-of-range":
        return ["pretrain", out, *jets, "data.channels=[0,9]"]
    if name == "scale-count":
        return ["pretrain", out, *jets, "data.preprocess.scale=[1.0,2.0]"]
    if name == "test-path-conflict":
        top = tmp / "top.h5"
        formats.write_boosted_top_hdf5(top)
        return ["pretrain", out, "data.source=hdf5", f"data.path={top}", f"data.test_path={h5}", *small]
    if name == "source-needs-path":
        return ["pretrain", out, "data.source=hdf5", *small]
    if name == "empty-folder":
        (tmp / "photos" / "cats").mkdir(parents=True)
        (tmp / "photos" / "cats" / "notes.txt").write_text("no images here")
        return ["pretrain", out, "data.source=folder", f"data.path={tmp / 'photos'}", *small]
    if name == "image-bomb":  # a PNG header of 10,000 x 10,000 pixels (a few hundred bytes on disk)
        formats.write_image_folder(tmp / "photos", np.full((4, 1, 20, 20), 128, dtype=np.uint8), np.array([0, 1, 0, 1]))
        formats.write_png_header(tmp / "photos" / "class1" / "huge.png", 10_000, 10_000)
        return ["pretrain", out, "data.source=folder", f"data.path={tmp / 'photos'}", *small]
    if name == "hdf5-huge-shape":  # a dataset declared with 10^12 images of 20x20 (chunked, never written: a tiny file)
        import h5py

        with h5py.File(tmp / "huge.h5", "w") as f:
            f.create_dataset("X_jets", shape=(10**12, 20, 20), dtype="f4", chunks=(1, 20, 20))
        return ["pretrain", out, "data.source=hdf5", f"data.path={tmp / 'huge.h5'}", *small]
    if name == "bad-image":
        formats.write_image_folder(tmp / "photos", np.full((4, 1, 20, 20), 128, dtype=np.uint8), np.array([0, 1, 0, 1]))
        (tmp / "photos" / "class1" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
        return ["pretrain", out, "data.source=folder", f"data.path={tmp / 'photos'}", "data.on_bad_image=error", *small]
    if name.startswith("pack-"):
        from maekit.data import pack

        formats.write_image_folder(tmp / "photos", np.full((4, 1, 20, 20), 128, dtype=np.uint8), np.array([0, 1, 0, 1]))
        pk = tmp / "photos.h5"
        pack.pack_folder(tmp / "photos", pk, 20, workers=1, progress=False)
        folder = ["data.source=folder", f"data.path={tmp / 'photos'}", f"data.pack={pk}", *small]
        if name == "pack-missing":
            return ["pretrain", out, *folder, f"data.pack={tmp / 'nowhere.h5'}"]
        if name == "pack-other-size":
            return ["pretrain", out, *folder, "data.image_size=16"]
        if name == "pack-folder-changed":
            f = tmp / "photos" / "class1" / "0001.png"
            f.write_bytes(f.read_bytes() + b"\0")
            return ["pretrain", out, *folder]
        if name == "pack-test-path-unpacked":
            return ["pretrain", out, *folder, f"data.test_path={tmp / 'photos'}"]
    if name == "cifar-pickle":
        import pickle

        folder = tmp / "cifar-10-batches-py"
        formats.write_cifar(
            folder, np.zeros((70, 3, 32, 32), dtype=np.uint8), np.zeros(70, dtype=np.int64), per_batch=12, test=10
        )

        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))

        (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
        return ["pretrain", out, "data.source=cifar", f"data.path={folder}", *small]
    if name == "unsupported-file":
        (tmp / "jets.csv").write_text("a,b\n1,2\n")
        return ["data", "inspect", str(tmp / "jets.csv")]
    raise KeyError(name)


CASES = {
    "missing-data-path": r"data.path .*nowhere does not exist",
    "data-not-found": r"kmnist idx files not found in .*; or put the "
    r"four idx files in a folder and set data.path=FOLDER or MAEKIT_DATA",
    "unknown-dataset": r"data.name 'cifar11' is not a known idx "
    r"dataset \(known: fashion_mnist, mnist, kmnist\); set data.path",
    "unsupported-source": r"config key 'data.source' must be one of 'idx' \| "
    r"'cifar' \| 'folder' \| 'npy' \| 'hdf5' \| 'parquet', got 'tfrecord'",
    "corrupt-idx": r"idx file .*train-images-idx3-ubyte.gz is unreadable or corrupt",
    "truncated-idx": r"idx file .*t10k-labels-idx1-ubyte is truncated "
    r"or corrupt: shape \(300,\) needs 308 bytes, file has 301",
    "label-count-mismatch": r"idx file .*train-labels-idx1-ubyte.gz holds \(10,\) "
    r"labels; expected one per image of .*train-images-idx3-ubyte.gz \(600\)",
    "patch-not-dividing": r"model.img_size 28x28 is not divisible by model.patch_size=5",
    "mask-ratio-out-of-range": r"model.mask_ratio must be in \(0, "
    r"1\) \(the loss is taken over the masked patches\), got 1.2",
    "mask-ratio-zero": r"model.mask_ratio must be in \(0, 1\) \(the loss is taken over the masked patches\), got 0",
    "hit-intensity-with-norm-pix": r"model.loss=hit_intensity predicts pixels "
    r"as they are; it cannot be combined with model.norm_pix_loss=true",
    "hit-variance-without-hit-intensity": r"model.hit_variance applies to model.loss=hit_intensity, got model.loss=mse",
    "heads-not-dividing": r"model.embed_dim=36 is not divisible by model.num_heads=5",
    "unknown-key": r"unknown config key 'train.epoch' \(known here: epochs, ",
    "wrong-type": r"config key 'train.batch_size' expects int, got 'big'",
    "bad-choice": r"config key 'optim.schedule' must be one of "
    r"'cosine' \| 'cosine_restarts' \| 'constant', got 'linear'",
    "unknown-preset": r"config key 'model.preset': unknown preset 'vit-giant' \(known: ",
    "config-not-found": r"config file .*missing.yaml not found",
    "config-not-yaml": r"config file .*bad.yaml is not valid YAML",
    "batch-larger-than-data": r"540 training images are fewer than one global "
    r"batch \(4096 x 1 accumulation x 1 processes\); lower train.batch_size",
    "out-dir-not-empty": r"run directory .*out already holds files; "
    r"pass resume=true to continue it or choose another out=DIR",
    "resume-not-a-run": r".*out is not a maekit run directory \(no run.json\); cannot resume it",
    "resume-other-kind": r".* holds a 'pretrain' run, not a 'finetune' run; cannot resume it as finetune",
    "pretrained-missing": r"pretrained path .*nope does not exist \(expected a maekit run directory",
    "pretrained-not-a-run": r".*plain is not a maekit run directory with a checkpoint",
    "pickle-checkpoint": r"checkpoint .*best.safetensors is a pickle/torch.save "
    r"file; maekit only loads safetensors checkpoints and never unpickles",
    "too-many-labels": r"labels=100000 asks for 100000 labelled images but the training split has 540",
    "negative-labels": r"labels must be a positive fraction \(<= 1\) or count \(> 1\), got -5",
    "reconstruct-bad-mask": r"--mask-ratio must be in \(0, 1\) \(the loss is taken over the masked patches\), got 1.5",
    "reconstruct-zero-mask": r"--mask-ratio must be in \(0, 1\) \(the loss is taken over the masked patches\), got 0",
    "calibrate-without-hit-map": r".*: calibrate fits the hit decoding of model.loss=hit_intensity; "
    r"this run's model.loss is mse",
    "fp16-on-cpu": r"train.precision=fp16 needs a CUDA device \(use bf16 or fp32 on CPU\)",
    "compare-unknown-method": r"methods: unknown method 'svm' \(known: finetune, scratch, cnn, pixel_knn, linprobe, ",
    "compare-changed-recipe": r".*cells/knn_labels60_seed0 was run with another recipe "
    r"\(knn_k 20 -> 5\); remove that cell directory to rerun it, or use another out=DIR",
    "cnn-with-pretrained": r"arch=cnn is the supervised CNN baseline and trains from scratch; got pretrained=.*pre",
    "pixel-knn-with-pretrained": r"features=pixels uses no encoder; got pretrained=.*pre",
    "negative-mixup": r"mixup and cutmix must be >= 0 \(0 = off\), got -0.5 and 0.0",
    "patch-dropout-out-of-range": r"patch_dropout must be in \[0, 1\) \(0 = off\), got 1.0",
    "decoder-keep-out-of-range": r"model.decoder_keep must be in \(0, 1\], got 0.0",
    "batch-size-zero": r"train.batch_size must be >= 1, got 0",
    "hdf5-missing-key": r".*jets.h5: no image dataset key 'images' "
    r"\(the file has: X_jets, m0, pt, y\); set data.images_key",
    "hdf5-wrong-rank": r".*jets.h5: X_jets: expected images of rank 3 "
    r"\[N,H,W\] or 4 \[N,H,W,C\]/\[N,C,H,W\], got shape \[12, 400\]",
    "hdf5-nan": r".*jets.h5: X_jets: image 7 holds NaN or Inf values; expected finite numbers",
    "hdf5-label-mismatch": r".*jets.h5: y: 9 labels for 12 images; expected one label per image",
    "hdf5-truncated": r".*jets.h5: not a readable HDF5 file \(",
    "hdf5-empty": r".*jets.h5: X_jets: the training data hold no images",
    "parquet-truncated": r".*jets.parquet: not a readable Parquet file \(",
    "channels-vs-config": r"data .*jets.h5: X_jets have 3 channels of 20x20 "
    r"but the model expects 8 of 20x20 \(model.in_chans / model.img_size\)",
    "channels-vs-checkpoint": r"encoder .*pre expects 1 channels of 28x28, but data .*jets.h5: X_jets have 3 of 20x20",
    "channel-out-of-range": r".*jets.h5: X_jets: data.channels \[0, "
    r"9\] asks for channel 9 but the images have 3 channels \(0..2\)",
    "scale-count": r"data.preprocess.scale lists 2 factors, the images have 3 channels",
    "test-path-conflict": r".*top.h5 has its own test split; remove data.test_path",
    "source-needs-path": r"data.path is required for data.source=hdf5",
    "empty-folder": r".*photos: no image files found \(looked for .bmp, ",
    "image-bomb": r".*huge.png: image over Pillow's decompression-bomb limit \(10000x10000 = "
    r"100,000,000 pixels, limit 89,478,485\); refusing to decode it \(remove or shrink the file\)",
    "hdf5-huge-shape": r".*huge.h5: X_jets: the dataset declares shape \[1000000000000, "
    r"20, 20\]; indexing its 1,000,000,000,000 images needs 44703.5 GiB, more than the "
    r"[\d.]+ GiB of memory available; the file is corrupt or too large for this machine",
    "idx-huge-header": r"idx file .*train-images-idx3-ubyte.gz declares shape \(1000000000, 28, 28\) \(784,000,000,016 "
    r"bytes\), more than the [\d,]+ bytes of memory available; its header is corrupt or it is not an idx file",
    "bad-image": r".*cut.png: cannot decode the image \(1 unreadable "
    r"file\(s\) in .*photos\); set data.on_bad_image=skip to skip them",
    "pack-missing": r"data.pack .*nowhere.h5 does not exist; make it "
    r"once with `maekit data pack .*photos --out .*nowhere.h5 --size N`",
    "pack-other-size": r".*photos.h5: packed at 20x20 pixels, expected 16x16 \(data.image_size\); re-pack with "
    r"`maekit data pack .*photos --out .*photos.h5 --size 16 --force`",
    "pack-folder-changed": r".*photos.h5: .*photos changed since it was packed "
    r"\(class1/0001.png changed \([\d,]+ -> [\d,]+ bytes\)\); expected the 4 image files as "
    r"packed; re-pack with `maekit data pack .*photos --out .*photos.h5 --size 20 --force`",
    "pack-test-path-unpacked": r"data.test_path .*photos needs its "
    r"own pack with data.pack set: pack it and set data.test_pack",
    "cifar-pickle": r".*data_batch_1: not a CIFAR batch \(refusing to "
    r"load (posix|os).system\); only pickled dicts of arrays are accepted",
    "sweep-bad-grid": r"--grid item 'model.patch_size' must look like key.sub=value1,value2",
    "sweep-one-cell": r"--grid needs at least one key with two or more values, e.g. --grid model.mask_ratio=0.75,0.85",
    "report-not-a-run": r".*plain is not a maekit run, compare or sweep directory \(no run.json\)",
    "jets-bad-window": r"need 0 < --pt-min < --pt-max, got 600 and 500",
    "jets-unreachable-window": r"the parton-level prefilter vetoed 300 events in a row: no jet gets near "
    r"the pT window 3000-3050 GeV with \|y\| < 2 \(pTHatMin 200 GeV\); check the window and --pthat-min",
    "test-images-pretrained": r"\d+ of the 20 test images \(.*f.npz: images\) were pretraining "
    r"images of .*pre \(pretrained with data.path=.*f.npz, test_path=None, split_seed=0, "
    r"test_fraction=0.1; this run has data.path=.*f.npz, test_path=None, split_seed=1, "
    r"test_fraction=0.1\); use the pretraining's split settings, or pass allow_test_overlap=true",
    "unsupported-file": r".*jets.csv: unsupported file type \(expected "
    r".h5/.hdf5, .parquet, .npy/.npz, an idx/CIFAR folder or an image folder\)",
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, fmnist_small):
    out = tmp_path_factory.mktemp("errs") / "pre"
    assert (
        main(
            [
                "pretrain",
                f"out={out}",
                f"data.path={fmnist_small}",
                *TINY,
                "train.progress=false",
                "train.epochs=1",
                "train.eval_samples=64",
                "train.batch_size=64",
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_case(name, tmp_path, fmnist_small, pretrained, capsys, monkeypatch):
    monkeypatch.setenv("MAEKIT_NO_DOWNLOAD", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    if name == "jets-unreachable-window":
        from maekit.physics import generate

        monkeypatch.setattr(generate, "PREFILTER_GIVE_UP", 300)
    before = {p: p.read_bytes() for p in pretrained.rglob("*") if p.is_file()}
    args = case_args(name, tmp_path, fmnist_small, pretrained)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maekit: error: "), err
    assert re.search(CASES[name], lines[0]), lines[0]
    assert "Traceback" not in err
    after = {p: p.read_bytes() for p in pretrained.rglob("*") if p.is_file()}
    assert after == before  # no earlier output touched
    out = tmp_path / "out"
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    if name.startswith("jets-"):
        assert not (tmp_path / "jets.h5").exists() and not list(tmp_path.glob(".jets.h5.*"))  # no half-written file


def test_every_case_is_documented():
    doc = DOC.read_text()
    for name in CASES:
        assert f"`{name}`" in doc, name
    assert len(CASES) >= 20
