import pytest
import torch

from maekit.models.mae import MAE, ModelConfig
from maekit.models.pos_embed import sincos_2d


def tiny(**kw) -> ModelConfig:
    base = dict(img_size=[28, 28], in_chans=1, patch_size=7, embed_dim=32, depth=2, num_heads=2,
                decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    return ModelConfig(**(base | kw))


def test_stage_shapes_any_channels_and_non_square():
    cfg = tiny(img_size=[24, 40], in_chans=8, patch_size=8, mask_ratio=0.75)
    m = MAE(cfg)
    x = torch.randn(3, 8, 24, 40)
    length = (24 // 8) * (40 // 8)
    latent, mask, ids_restore = m.forward_encoder(x)
    keep = int(length * 0.25)
    assert latent.shape == (3, 1 + keep, 32)
    assert mask.shape == ids_restore.shape == (3, length)
    pred = m.forward_decoder(latent, ids_restore)
    assert pred.shape == (3, length, 8 * 8 * 8)
    assert m.forward_loss(x, pred, mask).ndim == 0
    assert m.encoder.forward_features(x).shape == (3, 1 + length, 32)
    assert m.predictions_to_pixels(x, pred).shape == x.shape


def test_position_embeddings_are_fixed_sincos_buffers():
    m = MAE(tiny())
    names = {n for n, _ in m.named_parameters()}
    assert not any("pos_embed" in n for n in names)
    assert torch.allclose(m.encoder.pos_embed[0], sincos_2d(32, 4, 4, cls_token=True))
    assert torch.allclose(m.decoder_pos_embed[0], sincos_2d(16, 4, 4, cls_token=True))
    assert torch.all(m.encoder.pos_embed[0, 0] == 0)
    # first half of the channels varies along columns only, second half along rows only
    table = sincos_2d(16, 3, 5)
    grid = table.reshape(3, 5, 16)
    assert torch.allclose(grid[0, :, :8], grid[2, :, :8]) and not torch.allclose(grid[:, 0, :8], grid[:, 4, :8])
    assert torch.allclose(grid[:, 0, 8:], grid[:, 4, 8:]) and not torch.allclose(grid[0, :, 8:], grid[2, :, 8:])


def test_loss_counts_masked_patches_only():
    m = MAE(tiny(mask_ratio=0.5))
    x = torch.randn(2, 1, 28, 28)
    latent, mask, ids_restore = m.forward_encoder(x)
    pred = m.forward_decoder(latent, ids_restore)
    target = m.targets(x)
    # perfect prediction on masked patches, garbage on visible ones: loss must be zero
    fake = torch.where(mask.bool().unsqueeze(-1), target, target + 100.0)
    assert m.forward_loss(x, fake, mask).item() == pytest.approx(0.0, abs=1e-6)
    # and the loss equals the mean over masked patches of the per-patch MSE
    per = ((pred - target) ** 2).mean(-1).detach()
    assert m.forward_loss(x, pred, mask).item() == pytest.approx(float(per[mask.bool()].mean()), rel=1e-5)


def test_norm_pix_targets_are_standardised_per_patch():
    m = MAE(tiny(norm_pix_loss=True))
    t = m.targets(torch.rand(2, 1, 28, 28) * 5 + 3)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 16), atol=1e-4)


def test_fixed_noise_gives_identical_outputs():
    m = MAE(tiny()).eval()
    x = torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, 16)
    a, b = m(x, noise=noise), m(x, noise=noise)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])


def test_bad_architecture_errors_name_the_key():
    with pytest.raises(ValueError, match="img_size 28x28 is not divisible by model.patch_size=5"):
        tiny(patch_size=5).validate()
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
        tiny(mask_ratio=1.0).validate()
    with pytest.raises(ValueError, match="embed_dim=30 is not divisible by model.num_heads=4"):
        tiny(embed_dim=30, num_heads=4).validate()


@pytest.mark.parametrize("c,h,w,p", [(1, 28, 28, 4), (3, 32, 24, 8), (8, 40, 40, 5)])
def test_patch_embed_equals_the_strided_convolution(c, h, w, p):
    from maekit.models.vit import PatchEmbed

    pe = PatchEmbed((h, w), p, c, 16)
    x = torch.randn(2, c, h, w)
    conv = pe.proj(x).flatten(2).transpose(1, 2)
    assert torch.allclose(pe(x), conv, atol=1e-5)


def test_partial_decoding_with_every_masked_patch_equals_the_standard_mae():
    m = MAE(tiny(mask_ratio=0.75, norm_pix_loss=True))
    x, noise = torch.randn(3, 1, 28, 28), torch.rand(3, 16)
    loss, pred, mask = m(x, noise=noise)
    latent, _, ids_restore = m.forward_encoder(x, noise=noise)
    masked = int(mask[0].sum())
    part, decoded = m.forward_decoder_partial(latent, ids_restore, masked)
    assert torch.equal(decoded, mask)
    assert torch.allclose(part[mask.bool()], pred[mask.bool()], atol=1e-5)
    assert m.forward_loss(x, part, decoded).item() == pytest.approx(loss.item(), rel=1e-5)


def test_partial_decoding_decodes_a_random_subset_of_masked_patches_only():
    m = MAE(tiny(mask_ratio=0.75, decoder_keep=0.25)).train()
    x, noise = torch.randn(4, 1, 28, 28), torch.rand(4, 16)
    _, true_mask, ids_restore = m.forward_encoder(x, noise=noise)
    loss, pred, decoded = m(x, noise=noise)
    assert decoded.sum(1).tolist() == [3.0] * 4  # round(0.25 * 12) of the 12 masked patches
    assert torch.all(decoded <= true_mask)  # never a visible patch
    assert torch.all(pred[~decoded.bool()] == 0)
    # the decoded ones are the first masked patches of the shuffle: the noise's next-smallest values
    order = torch.argsort(noise, dim=1)
    assert torch.equal(decoded.nonzero()[:, 1].view(4, 3).sort(1).values, order[:, 4:7].sort(1).values)
    assert m.eval()(x, noise=noise)[2].sum().item() == 4 * 12  # evaluation decodes every masked patch
    assert loss.requires_grad and torch.isfinite(loss)


def test_decoder_keep_is_validated():
    with pytest.raises(ValueError, match="model.decoder_keep"):
        tiny(decoder_keep=0.0).validate()
