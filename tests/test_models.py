import pytest
import torch

from maekit.models.mae import MAE, HitDecoding, ModelConfig
from maekit.models.pos_embed import sincos_2d


def tiny(**kw) -> ModelConfig:
    base = dict(
        img_size=[28, 28],
        in_chans=1,
        patch_size=7,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
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


def test_cross_decoder_queries_are_independent_so_partial_decoding_is_exact():
    # CrossMAE's decoder: mask tokens attend to the visible tokens, never to each other, so decoding a subset of the
    # masked patches gives exactly the predictions that decoding all of them gives there
    m = MAE(tiny(mask_ratio=0.75, decoder_attention="cross", decoder_depth=2)).eval()
    x, noise = torch.randn(3, 1, 28, 28), torch.rand(3, 16)
    loss, pred, mask = m(x, noise=noise)
    assert pred.shape == (3, 16, 49) and mask.sum().item() == 3 * 12  # evaluation: every masked patch
    latent, _, ids_restore = m.forward_encoder(x, noise=noise)
    part, decoded = m.forward_decoder_partial(latent, ids_restore, 5)
    assert decoded.sum(1).tolist() == [5.0] * 3 and torch.all(decoded <= mask)
    assert torch.allclose(part[decoded.bool()], pred[decoded.bool()], atol=1e-6)
    # in training it decodes the masked patches only, even at decoder_keep 1: the loss is the evaluation's
    train_loss, train_pred, train_mask = m.train()(x, noise=noise)
    assert torch.equal(train_mask, mask) and torch.all(train_pred[~mask.bool()] == 0)
    assert train_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    # and a visible token changes the predictions (the queries do read the context)
    noise[:, 0] = 0.0  # patch 0 (top left) visible in every image
    x2 = x.clone()
    x2[:, :, :7, :7] += 5.0
    masked = m.eval()(x, noise=noise)[2].bool()
    assert not torch.allclose(m(x2, noise=noise)[1][masked], m(x, noise=noise)[1][masked])


def test_cross_decoder_trains_and_keeps_the_self_decoder_parameter_names_apart():
    cross = MAE(tiny(decoder_attention="cross", decoder_keep=0.5)).train()
    names = {k for k in cross.state_dict() if k.startswith("decoder_blocks.0.")}
    assert "decoder_blocks.0.attn.kv.weight" in names and "decoder_blocks.0.attn.qkv.weight" not in names
    opt = torch.optim.AdamW(cross.parameters(), lr=1e-2)
    x, noise = torch.randn(8, 1, 28, 28), torch.rand(8, 16)
    first = cross(x, noise=noise)[0]
    for _ in range(30):
        loss = cross(x, noise=noise)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first.item()
    assert cross.decoder_blocks[0].attn.kv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="model.decoder_attention must be one of self, cross, got 'both'"):
        tiny(decoder_attention="both").validate()


def test_decoder_keep_is_validated():
    with pytest.raises(ValueError, match="model.decoder_keep"):
        tiny(decoder_keep=0.0).validate()


def test_position_embedding_values_match_the_reference_formula():
    # MAE's get_2d_sincos_pos_embed with dim 8 on a 2x2 grid: omega = [1, 1/100]; the first half encodes the column,
    # the second half the row, each as [sin(pos*omega), cos(pos*omega)]. Patch 2 sits at row 1, column 0.
    table = sincos_2d(8, 2, 2)
    expected = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.8414710, 0.0099998, 0.5403023, 0.9999500])
    assert torch.allclose(table[2], expected, atol=1e-6)
    # patch 1: row 0, column 1
    assert torch.allclose(
        table[1], torch.tensor([0.8414710, 0.0099998, 0.5403023, 0.9999500, 0.0, 0.0, 1.0, 1.0]), atol=1e-6
    )


def test_eval_mode_is_deterministic_and_train_mode_drops_paths():
    from maekit.models.vit import ViT

    vit = ViT((28, 28), 7, 1, 32, 2, 2, drop_path=0.5)
    x = torch.randn(4, 1, 28, 28)
    vit.eval()
    assert torch.equal(vit.forward_features(x), vit.forward_features(x))
    vit.train()
    torch.manual_seed(0)
    a = vit.forward_features(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, vit.forward_features(x))


def test_norm_pix_targets_have_unit_variance_and_map_back_to_pixels():
    m = MAE(tiny(norm_pix_loss=True))
    x = torch.rand(2, 1, 28, 28) * 5 + 3
    x[0, :, :7, :7] = 2.0  # one flat patch: zero variance, the eps keeps it finite (all zeros)
    t = m.targets(x)
    assert torch.allclose(t[1].var(-1), torch.ones(16), atol=1e-3)
    assert torch.equal(t[0, 0], torch.zeros(49)) and torch.isfinite(t).all()
    # the reference's variance is the unbiased one, with eps 1e-6 inside the square root
    patch = m.patchify(x)[1, 5]
    assert torch.allclose(t[1, 5], (patch - patch.mean()) / (patch.var(unbiased=True) + 1e-6) ** 0.5, atol=1e-6)
    assert torch.allclose(m.predictions_to_pixels(x, t), x, atol=1e-5)  # the visualisation inverts the targets


def test_weight_initialisation_statistics():
    """Reference MAE init: xavier-uniform linears (patch projection as a flat linear), zero biases, unit LayerNorms,
    normal(0.02) cls and mask tokens; a classifier head starts near zero (std 2e-5)."""
    import math

    from maekit.models.vit import ViT

    m = MAE(tiny(embed_dim=128, num_heads=4, decoder_embed_dim=64, depth=2))
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.Linear):
            fan_out, fan_in = mod.weight.shape
            bound = math.sqrt(6 / (fan_in + fan_out))
            w = mod.weight.detach()
            assert w.abs().max() <= bound and abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.1, name
            assert mod.bias is None or torch.count_nonzero(mod.bias) == 0, name
        elif isinstance(mod, torch.nn.LayerNorm):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0), name
    w = m.encoder.patch_embed.proj.weight.detach().flatten(1)  # [D, C*p*p]
    bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))
    assert w.abs().max() <= bound and abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.1
    tokens = torch.cat([m.encoder.cls_token.flatten(), m.mask_token.flatten()])
    assert abs(tokens.std().item() - 0.02) < 0.005
    vit = ViT((28, 28), 7, 1, 128, 2, 4, num_classes=10)
    vit.reset_head(10)
    assert vit.head.weight.std().item() < 1e-4 and torch.count_nonzero(vit.head.bias) == 0


def test_hit_intensity_loss_on_a_sparse_image_with_a_known_answer():
    """4x4 image, one channel, patch 2 (4 patches of 4 pixels), empty level -1, one hit of 3.0 at (0, 0). Patches 0
    and 1 are masked. Every logit 0 (p = 0.5): the cross-entropy is ln 2 on each of the 8 masked pixels; intensity
    2.0 on the hit pixel: squared error 1, relative to the hit's squared height above empty (3 - -1)^2 = 16. Garbage
    on the visible patches changes nothing; predicting the empty level on the hit costs exactly 1."""
    import math

    m = MAE(tiny(img_size=[4, 4], patch_size=2, loss="hit_intensity", empty_level=[-1.0]))
    x = torch.full((1, 1, 4, 4), -1.0)
    x[0, 0, 0, 0] = 3.0
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    logits = torch.zeros(1, 4, 4)
    intensity = torch.full((1, 4, 4), 2.0)
    logits[0, 2:], intensity[0, 2:] = 50.0, -7.0  # visible patches: ignored
    pred = torch.cat([logits, intensity], dim=-1)
    assert m.forward_loss(x, pred, mask).item() == pytest.approx(math.log(2) + 1.0 / 16, rel=1e-6)
    empty = torch.cat([logits, torch.full((1, 4, 4), -1.0)], dim=-1)
    assert m.forward_loss(x, empty, mask).item() == pytest.approx(math.log(2) + 1.0, rel=1e-6)
    # confident and right everywhere: the loss goes to zero
    good = torch.cat([torch.where(m.hits(x) > 0, 30.0, -30.0), m.patchify(x)], dim=-1)
    assert m.forward_loss(x, good, mask).item() < 1e-9
    # pictures: confident predictions give the image back
    pixels = m.predictions_to_pixels(x, good)
    assert torch.equal(pixels, x)


def test_hit_intensity_pictures_hold_the_expected_number_of_hits_at_the_most_probable_pixels():
    """Masked patch 0 has hit probabilities 0.9, 0.6, 0.3, 0.2 (sum 2.0), masked patch 1 none: 2 hits, at the 0.9 and
    0.6 pixels. A "p > 0.5" rule would agree here, but not on a sparse image where no single pixel is likely: 8
    pixels at p = 0.375 (sum 3.0) give 3 hits, not 0. Visible patch 2's confident logits count for nothing."""
    m = MAE(tiny(img_size=[4, 4], patch_size=2, loss="hit_intensity", empty_level=[-1.0]))
    x = torch.full((1, 1, 4, 4), -1.0)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    prob = torch.full((1, 4, 4), 1e-6)
    prob[0, 0] = torch.tensor([0.9, 0.6, 0.3, 0.2])
    prob[0, 2] = 0.99
    intensity = torch.arange(16.0).reshape(1, 4, 4)
    pixels = m.patchify(m.predictions_to_pixels(x, torch.cat([torch.logit(prob), intensity], -1), mask))
    assert pixels[0, 0].tolist() == [0.0, 1.0, -1.0, -1.0] and pixels[0, 1:].eq(-1.0).all()
    prob = torch.full((1, 4, 4), 1e-6)
    prob[0, 0], prob[0, 1], prob[0, 2] = 0.375, 0.375, 0.99
    pixels = m.patchify(m.predictions_to_pixels(x, torch.cat([torch.logit(prob), intensity], -1), mask))
    hits = pixels[0, :2] > -1.0
    assert int(hits.sum()) == 3 and pixels[0, 2:].eq(-1.0).all()
    assert torch.equal(pixels[0, :2][hits], intensity[0, :2][hits])  # each hit with its own predicted intensity
    # no mask: every patch counts (the sum of all 16 probabilities, 0.375 * 8 + 0.99 * 4 = 6.96: 7 hits)
    assert int((m.predictions_to_pixels(x, torch.cat([torch.logit(prob), intensity], -1)) > -1.0).sum()) == 7


def test_sampled_hit_decoding_draws_each_pixel_with_its_probability_and_repeats_with_its_seed():
    """hit_decoding="sample": certain pixels (p ~ 1 or ~ 0) come out as with "top"; 1,600 masked pixels at p = 0.25 give
    a hit fraction within 5 standard deviations of 0.25 (sd 0.011), each hit with its own predicted intensity, none on
    the visible patches; the same seed repeats the picture and another seed changes it; a wrong name is refused."""
    m = MAE(tiny(img_size=[40, 40], patch_size=2, loss="hit_intensity", empty_level=[-1.0]))
    x = torch.full((1, 1, 40, 40), -1.0)
    mask = torch.zeros(1, 400)
    mask[0, :200] = 1.0
    intensity = torch.arange(1600.0).reshape(1, 400, 4)

    def draw(prob, seed):
        pred = torch.cat([torch.logit(prob), intensity], -1)
        return m.patchify(m.predictions_to_pixels(x, pred, mask, "sample", torch.Generator().manual_seed(seed)))

    certain = torch.full((1, 400, 4), 1e-9)
    certain[0, :7] = 1 - 1e-7
    top = m.patchify(m.predictions_to_pixels(x, torch.cat([torch.logit(certain), intensity], -1), mask))
    assert torch.equal(draw(certain, 0), top) and int((top > -1.0).sum()) == 28
    pixels = draw(torch.full((1, 400, 4), 0.25), 0)
    hits = pixels[0, :200] > -1.0
    assert abs(float(hits.float().mean()) - 0.25) < 5 * (0.25 * 0.75 / 800) ** 0.5
    assert torch.equal(pixels[0, :200][hits], intensity[0, :200][hits]) and pixels[0, 200:].eq(-1.0).all()
    assert torch.equal(draw(torch.full((1, 400, 4), 0.25), 0), pixels)
    assert not torch.equal(draw(torch.full((1, 400, 4), 0.25), 1), pixels)
    with pytest.raises(ValueError, match="hit decoding must be one of top, sample, got 'mean'"):
        m.predictions_to_pixels(x, torch.cat([torch.logit(certain), intensity], -1), mask, "mean")


def test_top_decoding_at_a_temperature_keeps_the_count_and_spreads_the_hits_by_probability():
    """HitDecoding("top", T): 400 masked pixels at p = 0.02 and 400 at p = 0.005 sum to 10 hits. T = 0 puts all 10 on
    the likelier pixels (as "top"); T = 1 draws 10 without replacement in proportion to p, so about 4/5 of them land
    there (50 seeded draws: 500 hits, sd ~0.02); a very high T draws nearly uniformly (about half). Every draw keeps
    exactly 10 hits and the same seed repeats it. intensity_scale multiplies a hit's distance from the empty level."""
    m = MAE(tiny(img_size=[40, 40], patch_size=2, loss="hit_intensity", empty_level=[-1.0]))
    x = torch.full((1, 1, 40, 40), -1.0)
    mask = torch.zeros(1, 400)
    mask[0, :200] = 1.0
    prob = torch.full((1, 400, 4), 1e-9)
    prob[0, :100], prob[0, 100:200] = 0.02, 0.005
    pred = torch.cat([torch.logit(prob), torch.full((1, 400, 4), 3.0)], -1)

    def hits(decoding, seed=0):
        pixels = m.patchify(m.predictions_to_pixels(x, pred, mask, decoding, torch.Generator().manual_seed(seed)))
        return pixels[0] > -1.0

    assert torch.equal(hits(HitDecoding("top", 0.0)), hits("top")) and int(hits("top")[:100].sum()) == 10

    def likely_share(t):
        draws = [hits(HitDecoding("top", t), seed) for seed in range(50)]
        assert all(int(d.sum()) == 10 for d in draws)
        return sum(int(d[:100].sum()) for d in draws) / 500

    assert abs(likely_share(1.0) - 0.8) < 0.08 and abs(likely_share(50.0) - 0.5) < 0.1
    assert torch.equal(hits(HitDecoding("top", 1.0), 7), hits(HitDecoding("top", 1.0), 7))
    scaled = m.patchify(m.predictions_to_pixels(x, pred, mask, HitDecoding("top", 0.0, (0.5,))))
    assert set(scaled[0].unique().tolist()) == {-1.0, 1.0}  # -1 + 0.5 * (3 - (-1))
    with pytest.raises(ValueError, match="hit decoding temperature must be >= 0, got -1"):
        HitDecoding("top", -1.0)


def test_hit_variance_adds_the_intensity_likelihood_around_the_detached_intensity():
    """The known-answer image above with a log-variance of ln 2 everywhere: the loss gains the Gaussian negative
    log-likelihood of the one hit, 0.5 * (ln 2 + (3 - 2)^2 / 2); visible patches still count for nothing, and the
    intensities get the same gradient as without the variance (the likelihood only trains the variance)."""
    import math

    m = MAE(tiny(img_size=[4, 4], patch_size=2, loss="hit_intensity", empty_level=[-1.0], hit_variance=True))
    plain = MAE(tiny(img_size=[4, 4], patch_size=2, loss="hit_intensity", empty_level=[-1.0]))
    x = torch.full((1, 1, 4, 4), -1.0)
    x[0, 0, 0, 0] = 3.0
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    logits, log_var = torch.zeros(1, 4, 4), torch.full((1, 4, 4), math.log(2))
    logits[0, 2:], log_var[0, 2:] = 50.0, -9.0  # visible patches: ignored
    intensity = torch.full((1, 4, 4), 2.0, requires_grad=True)
    loss = m.forward_loss(x, torch.cat([logits, intensity, log_var], dim=-1), mask)
    assert loss.item() == pytest.approx(math.log(2) + 1.0 / 16 + 0.5 * (math.log(2) + 0.5), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, intensity)
    base = intensity.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(plain.forward_loss(x, torch.cat([logits, base], dim=-1), mask), base)
    assert torch.equal(grad, expected) and grad[0, 0, 0] != 0
    assert m.decoder_pred.out_features == 3 * 4 and plain.decoder_pred.out_features == 2 * 4
    with pytest.raises(ValueError, match="model.hit_variance applies to model.loss=hit_intensity, got model.loss=mse"):
        tiny(hit_variance=True).validate()


def test_sampled_pictures_draw_the_intensity_from_the_predicted_normal_above_the_empty_level():
    """hit_variance, "sample": 800 certain hits with intensity 0 and variance 1 over an empty level of -1 draw from
    N(0, 1) truncated to above -1 (mean phi(1) / Phi(1) = 0.2876, sd 0.7): every hit stays a hit, the mean is within 5
    standard errors, the same seed repeats the picture; "top" keeps the predicted intensity itself."""
    m = MAE(tiny(img_size=[40, 40], patch_size=2, loss="hit_intensity", empty_level=[-1.0], hit_variance=True))
    x = torch.full((1, 1, 40, 40), -1.0)
    mask = torch.zeros(1, 400)
    mask[0, :200] = 1.0
    prob = torch.full((1, 400, 4), 1e-9)
    prob[0, :200] = 1 - 1e-7
    pred = torch.cat([torch.logit(prob), torch.zeros(1, 400, 4), torch.zeros(1, 400, 4)], -1)

    def draw(seed):
        return m.patchify(m.predictions_to_pixels(x, pred, mask, "sample", torch.Generator().manual_seed(seed)))

    hits = draw(0)[0, :200].flatten()
    assert bool((hits > -1.0).all()) and draw(0)[0, 200:].eq(-1.0).all()
    assert abs(float(hits.mean()) - 0.2876) < 5 * 0.70 / 800**0.5 and float(hits.std()) > 0.5
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
    top = m.patchify(m.predictions_to_pixels(x, pred, mask))
    assert top[0, :200].eq(0.0).all()


def test_a_signed_channel_counts_pixels_below_the_empty_level_as_hits():
    """Two channels, empty level -1 in both; channel 1 is signed (an impact parameter). A pixel at -3 on it is a hit and
    confident predictions give it back; the same value on the unsigned channel 0 is no hit (below empty cannot be a
    deposit) and comes back empty. Sampled intensities stay on their side of the empty level."""
    m = MAE(
        tiny(
            img_size=[4, 4],
            in_chans=2,
            patch_size=2,
            loss="hit_intensity",
            empty_level=[-1.0, -1.0],
            signed_channels=[False, True],
            hit_variance=True,
        )
    )
    x = torch.full((1, 2, 4, 4), -1.0)
    x[0, 1, 0, 0], x[0, 1, 3, 3], x[0, 0, 1, 1] = -3.0, 2.0, -3.0
    hits = m.unpatchify(m.hits(x))
    assert hits[0, 1, 0, 0] == 1 and hits[0, 1, 3, 3] == 1 and hits[0, 0, 1, 1] == 0 and int(hits.sum()) == 2
    good = torch.cat([torch.where(m.hits(x) > 0, 30.0, -30.0), m.patchify(x), torch.zeros(1, 4, 8)], dim=-1)
    back = m.predictions_to_pixels(x, good)
    expected = x.clone()
    expected[0, 0, 1, 1] = -1.0
    assert torch.equal(back, expected)
    for seed in range(5):
        drawn = m.predictions_to_pixels(x, good, None, "sample", torch.Generator().manual_seed(seed))
        assert drawn[0, 1, 0, 0] < -1.0 and drawn[0, 1, 3, 3] > -1.0
    unsigned = MAE(tiny(img_size=[4, 4], in_chans=2, patch_size=2, loss="hit_intensity", empty_level=[-1.0, -1.0]))
    assert int(unsigned.hits(x).sum()) == 1  # without signed_channels (checkpoints from before): above empty only
    with pytest.raises(ValueError, match="signed_channels lists 1 values, the images have 2 channels"):
        tiny(in_chans=2, loss="hit_intensity", empty_level=[0.0, 0.0], signed_channels=[True]).validate()


def test_negative_channels_are_found_in_one_chunked_pass():
    from maekit.data.transforms import negative_channels

    x = torch.rand(10, 3, 5, 5)
    x[7, 2, 4, 4] = -0.5
    assert negative_channels(x, chunk_bytes=300) == [False, False, True]
    assert negative_channels(torch.zeros(4, 2, 3, 3, dtype=torch.uint8)) == [False, False]


def test_hit_intensity_starts_every_pixel_at_a_one_percent_hit_probability():
    m = MAE(tiny(loss="hit_intensity", empty_level=[-1.0])).eval()
    _, pred, _ = m(torch.randn(2, 1, 28, 28), 0.75)
    logits, _ = pred.chunk(2, dim=-1)
    prob = torch.sigmoid(logits)
    assert prob.mean().item() == pytest.approx(0.01, abs=0.005) and prob.max().item() < 0.1


def test_hit_intensity_is_validated():
    with pytest.raises(
        ValueError,
        match="loss=hit_intensity predicts pixels as they are; it cannot be combined with model.norm_pix_loss=true",
    ):
        tiny(loss="hit_intensity", norm_pix_loss=True, empty_level=[0.0]).validate()
    with pytest.raises(ValueError, match="empty_level lists 2 values, the images have 1 channels"):
        tiny(loss="hit_intensity", empty_level=[0.0, 1.0]).validate()


def test_patch_dropout_trains_on_a_random_subset_of_patches_and_evaluates_on_all():
    from maekit.models.masking import random_masking
    from maekit.models.vit import ViT

    vit = ViT((28, 28), 7, 1, 32, 2, 2, patch_dropout=0.5, num_classes=3, global_pool="mean")
    x = torch.randn(4, 1, 28, 28)
    vit.train()
    torch.manual_seed(0)
    dropped = vit.forward_features(x)
    assert dropped.shape == (4, 1 + 8, 32)  # int(16 * 0.5) of the 16 patches, plus cls
    torch.manual_seed(0)  # the same draw, by hand: the kept patches' tokens, positions included, through the blocks
    ids_keep, _, _ = random_masking(4, 16, 0.5)
    tokens = torch.gather(vit.embed(x), 1, ids_keep[..., None].expand(-1, -1, 32))
    assert torch.allclose(dropped, vit.run_blocks(torch.cat([vit.cls_with_pos(4), tokens], 1)), atol=1e-6)
    vit.eval()
    full = vit.forward_features(x)
    assert full.shape == (4, 17, 32)
    plain = ViT((28, 28), 7, 1, 32, 2, 2, num_classes=3, global_pool="mean")
    plain.load_state_dict(vit.state_dict())
    assert torch.equal(plain.eval().forward_features(x), full)
    with pytest.raises(ValueError, match="patch_dropout"):
        ViT((28, 28), 7, 1, 32, 2, 2, patch_dropout=1.0)


@pytest.mark.parametrize("decoder_attention", ["self", "cross"])
def test_attention_runs_in_fp32_under_cpu_bf16_autocast(monkeypatch, decoder_attention):
    """torch's CPU flash-attention backward in bf16 is several times slower than in fp32, so under CPU autocast
    every attention (encoder, both decoders) gets fp32 inputs; the linear layers stay in bf16."""
    import torch.nn.functional as F

    from maekit.models import vit

    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, **kw)

    monkeypatch.setattr(vit.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    model = MAE(tiny(decoder_keep=0.5, decoder_attention=decoder_attention)).train()
    x = torch.randn(2, 1, 28, 28)
    noise = torch.rand(2, model.cfg.num_patches)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, noise=noise)[0]
    loss.float().backward()
    assert seen and all(d == (torch.float32,) * 3 for d in seen)
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None
    seen.clear()
    ref = model(x, noise=noise)[0]  # outside autocast: fp32 throughout, the same loss to bf16 precision
    assert all(d == (torch.float32,) * 3 for d in seen) and abs(loss.item() - ref.item()) < 0.05 * abs(ref.item())
