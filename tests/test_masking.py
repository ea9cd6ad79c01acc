import pytest
import torch

from maekit.models.masking import num_kept, patchify, random_masking, unpatchify


@pytest.mark.parametrize("c,h,w,p", [(1, 28, 28, 4), (3, 32, 32, 8), (8, 125, 125, 5), (3, 24, 40, 8)])
def test_patchify_round_trip(c, h, w, p):
    x = torch.randn(2, c, h, w)
    patches = patchify(x, p)
    assert patches.shape == (2, (h // p) * (w // p), p * p * c)
    assert torch.equal(unpatchify(patches, p, c, h, w), x)


def test_patchify_layout_is_row_major_and_channels_last():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    patches = patchify(x, 2)
    # patch 1 is row 0, columns 2-3; its first pixel is (0, 2) of channel 0, then the same pixel of channel 1
    assert patches[0, 1, 0] == x[0, 0, 0, 2]
    assert patches[0, 1, 1] == x[0, 1, 0, 2]
    assert patches[0, 3, 0] == x[0, 0, 2, 0]  # 3 patches per row


def test_patchify_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible by patch size 5"):
        patchify(torch.zeros(1, 1, 28, 28), 5)


def test_masking_by_hand():
    # noise 0.5 0.1 0.9 0.3 0.7 0.2, half masked: positions 1, 5, 3 are kept (lowest noise first), 0, 4, 2 masked
    ids_keep, mask, ids_restore = random_masking(1, 6, 0.5, noise=torch.tensor([[0.5, 0.1, 0.9, 0.3, 0.7, 0.2]]))
    assert ids_keep.tolist() == [[1, 5, 3]]
    assert mask.tolist() == [[1, 0, 1, 0, 1, 0]]
    # the decoder's sequence is [kept 1, 5, 3, masked 0, 4, 2]: position j is found at index ids_restore[j]
    assert ids_restore.tolist() == [[3, 0, 5, 2, 4, 1]]


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_masking_keeps_exact_count_and_the_decoder_unshuffles_in_order(ratio):
    n, length = 5, 49
    g = torch.Generator().manual_seed(0)
    ids_keep, mask, ids_restore = random_masking(n, length, ratio, generator=g)
    keep = num_kept(length, ratio)
    assert ids_keep.shape == (n, keep)
    assert torch.equal(mask.sum(1), torch.full((n,), float(length - keep)))
    # what forward_decoder does: [kept tokens in ids_keep order, mask tokens] gathered with ids_restore must put
    # every kept token back at its own position and a mask token at every masked one (mask == 1)
    tokens = torch.cat([ids_keep, torch.full((n, length - keep), -1)], dim=1)
    unshuffled = torch.gather(tokens, 1, ids_restore)
    expected = torch.where(mask == 0, torch.arange(length).expand(n, -1), torch.tensor(-1))
    assert torch.equal(unshuffled, expected)


def test_masking_is_seedable_and_differs_per_sample():
    a = random_masking(4, 16, 0.75, generator=torch.Generator().manual_seed(1))[1]
    b = random_masking(4, 16, 0.75, generator=torch.Generator().manual_seed(1))[1]
    assert torch.equal(a, b)
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 4))


def test_masking_rejects_bad_ratio():
    for r in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"mask ratio must be in \[0, 1\)"):
            random_masking(1, 4, r)
