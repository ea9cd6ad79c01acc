"""maekit compress: MAE latent code vs raw and sparse storage of detector images, with fidelity numbers."""

import json

import numpy as np
import pytest

from maekit.cli import main

import formats
from conftest import TINY


@pytest.fixture(scope="module")
def jets_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compress")
    formats.write_qg_hdf5(tmp / "jets.h5", n=40, size=20)
    run = tmp / "pre"
    assert (
        main(
            [
                "pretrain",
                f"out={run}",
                "data.source=hdf5",
                f"data.path={tmp / 'jets.h5'}",
                *TINY,
                "model.patch_size=5",
                "train.batch_size=8",
                "train.eval_samples=8",
                "train.progress=false",
                "train.epochs=1",
                "data.preprocess.zero_suppress=1e-3",
                "data.preprocess.log1p=true",
            ]
        )
        == 0
    )
    return tmp, run


def test_compress_reports_sizes_and_fidelity(jets_run, capsys):
    tmp, run = jets_run
    assert main(["compress", str(run), "--mask-ratios", "0,0.75", "--out", str(tmp / "c")]) == 0
    res = json.loads((tmp / "c" / "compress.json").read_text())
    rows = {r["method"]: r for r in res["rows"]}
    raw = rows["raw float32"]["bytes_per_image"]
    assert raw == 3 * 20 * 20 * 4
    # latent code: (1 + visible) tokens x 32 dims x 2 bytes (+ 1-byte indices of the 4 visible of 16 patches)
    assert rows["MAE latent, mask 0"]["bytes_per_image"] == 17 * 32 * 2
    assert rows["MAE latent, mask 0.75"]["bytes_per_image"] == 5 * 32 * 2 + 4
    # sparse baseline: the test images' stored pixels counted directly
    import h5py

    x = h5py.File(tmp / "jets.h5")["X_jets"][...]
    test_rows = np.load(run / "splits.npz")["test_rows"]
    nnz = (np.abs(x[test_rows]) > 1e-3).sum() / len(test_rows)
    sparse = next(r for m, r in rows.items() if m.startswith("sparse"))
    assert sparse["bytes_per_image"] == pytest.approx(nnz * (4 + 2))
    assert rows["MAE latent, mask 0.75"]["mse_mean"] > 0 and "sparse" in (tmp / "c" / "compress.md").read_text()


def test_compress_refuses_photos(tmp_path, tiny_pretrain_args, capsys):
    run = tmp_path / "fm"
    assert main(["pretrain", f"out={run}", *tiny_pretrain_args, "train.epochs=1"]) == 0
    capsys.readouterr()
    assert main(["compress", str(run)]) == 2
    assert "compress is for float detector images" in capsys.readouterr().err


def test_compress_counts_the_patches_the_encoder_keeps(jets_run):
    # 16 patches at mask 0.9: the encoder keeps int(16 * (1 - 0.9)) = 1, not 16 - int(16 * 0.9) = 2
    import torch

    from maekit.models.mae import MAE
    from maekit.runs import load_run

    tmp, run = jets_run
    loaded = load_run(run, "best")
    latent, _, _ = MAE(loaded.model_cfg).forward_encoder(torch.zeros(1, 3, 20, 20), 0.9)
    assert latent.shape[1] == 1 + 1
    assert main(["compress", str(run), "--mask-ratios", "0.9", "--out", str(tmp / "c9")]) == 0
    rows = {r["method"]: r for r in json.loads((tmp / "c9" / "compress.json").read_text())["rows"]}
    assert rows["MAE latent, mask 0.9"]["bytes_per_image"] == latent.shape[1] * 32 * 2 + 1
