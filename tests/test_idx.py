import numpy as np
import pytest

from maekit.config import DataConfig
from maekit.data import idx
from maekit.data.loader import load_splits, step_batches
from maekit.errors import MaekitError

from conftest import write_idx


def test_real_fashion_mnist_shapes(fmnist_full):
    x, y = fmnist_full["train"]
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and set(np.unique(y)) == set(range(10))
    assert fmnist_full["test"][0].shape == (10000, 28, 28)


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_round_trip_gz_or_not(tmp_path, name):
    arr = np.random.default_rng(0).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    write_idx(tmp_path / name, arr)
    assert np.array_equal(idx.read_idx(tmp_path / name), arr)


def test_corrupt_and_truncated_files(tmp_path):
    arr = np.zeros((4, 2, 2), dtype=np.uint8)
    good = tmp_path / "x-idx3-ubyte"
    write_idx(good, arr)
    raw = good.read_bytes()
    (tmp_path / "trunc").write_bytes(raw[:-3])
    with pytest.raises(
        MaekitError, match=r"trunc is truncated or corrupt: shape \(4, 2, 2\) needs 32 bytes, file has 29"
    ):
        idx.read_idx(tmp_path / "trunc")
    (tmp_path / "header").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(MaekitError, match="header is corrupt: bad header"):
        idx.read_idx(tmp_path / "header")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(MaekitError, match="bad.gz is unreadable or corrupt"):
        idx.read_idx(tmp_path / "bad.gz")


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(MaekitError, match="does not exist"):
        idx.locate("fashion_mnist", str(tmp_path / "nope"))
    with pytest.raises(MaekitError, match="does not hold the four idx files"):
        idx.locate("fashion_mnist", str(tmp_path))


def test_splits_are_seeded_disjoint_and_stats_match(fmnist_small):
    cfg = DataConfig(path=str(fmnist_small), val_fraction=0.2)
    a, b = load_splits(cfg, download=False), load_splits(cfg, download=False)
    assert len(a.train) == 480 and len(a.val) == 120 and len(a.test) == 300
    assert a.train.images.shape[1:] == (1, 28, 28)
    assert a.train.images.dtype.is_floating_point is False
    assert (a.val.images == b.val.images).all()
    x = a.train.images.double() / 255
    assert float(a.mean[0]) == pytest.approx(float(x.mean()), rel=1e-5)
    assert float(a.std[0]) == pytest.approx(float(x.std(unbiased=False)), rel=1e-4)
    c = load_splits(DataConfig(path=str(fmnist_small), val_fraction=0.2, split_seed=1), download=False)
    assert not (c.val.images == a.val.images).all()


def test_step_batches_shard_the_global_batch():
    one = step_batches(100, 8, epoch=3, seed=0)
    two = [step_batches(100, 4, epoch=3, seed=0, rank=r, world=2) for r in range(2)]
    assert one.shape == (12, 8)
    for s in range(12):
        assert set(one[s].tolist()) == set(two[0][s].tolist()) | set(two[1][s].tolist())
    assert not np.array_equal(step_batches(100, 8, epoch=4, seed=0), one)
    with pytest.raises(MaekitError, match="fewer than one global batch"):
        step_batches(5, 8, 0, 0)


def test_a_gzip_idx_file_is_never_read_past_its_header(tmp_path, monkeypatch):
    """A gzip file that holds far more than its header declares (a decompression bomb) is refused after reading
    at most one byte beyond the declared size."""
    import gzip

    path = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big") + bytes(50_000_000))
    asked = []
    real_read = gzip.GzipFile.read

    def counting_read(self, size=-1):
        asked.append(size)
        return real_read(self, size)

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    with pytest.raises(
        MaekitError, match=r"bomb-idx1-ubyte.gz is truncated or corrupt: shape \(10,\) needs 18 bytes, file has more"
    ):
        idx.read_idx(path)
    assert -1 not in asked and sum(asked) <= 18 + 1
