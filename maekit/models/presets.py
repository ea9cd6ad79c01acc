"""Named architectures. A config's `model.preset: NAME` starts from these values; keys set next to it win."""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # The demo model: small enough to pretrain on Fashion-MNIST in minutes on 2 CPU cores.
    "mae-small": dict(embed_dim=128, depth=6, num_heads=4, decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=4),
    # ViT-Tiny-sized encoder (timm vit_tiny: 192 x 12, 3 heads) with a 128 x 4 decoder.
    "vit-tiny": dict(embed_dim=192, depth=12, num_heads=3, decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=4),
    # Seed project (ML4SCI jets, 125x125x8, patch 5): encoder 12 x 256 / 4 heads, decoder 8 x 128 / 8 heads.
    "seed-jets": dict(
        embed_dim=256, depth=12, num_heads=4, decoder_embed_dim=128, decoder_depth=8, decoder_num_heads=8
    ),
    # Seed project (photos): encoder 8 x 768 / 12 heads, decoder 4 x 512 / 16 heads.
    "seed-base8": dict(
        embed_dim=768, depth=8, num_heads=12, decoder_embed_dim=512, decoder_depth=4, decoder_num_heads=16
    ),
    # The MAE paper's ViT-Base (12 x 768) with its 8 x 512 decoder.
    "vit-base": dict(
        embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16
    ),
}


def preset(name: str) -> dict:
    """The architecture fields of a named preset; KeyError lists the names known."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return dict(PRESETS[name])
