"""Floating-point operations of one MAE forward pass, counted by torch.utils.flop_counter.FlopCounterMode.

FlopCounterMode counts matrix multiplications (2 FLOPs per multiply-add). Its table has no entry for the CPU
kernel of scaled_dot_product_attention (aten._scaled_dot_product_flash_attention_for_cpu), which it would count
as 0; `flops_per_image` adds that op through `custom_mapping` with the same formula torch uses for the GPU
kernels: 2*B*H*S*T*d for Q K^T plus 2*B*H*S*T*d_v for the weighted sum of V (softmax, norms, GELU not counted).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .mae import MAE


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, s, d = query_shape
    t, dv = key_shape[2], value_shape[3]
    return 2 * b * h * s * t * d + 2 * b * h * s * t * dv


def _sdpa_ops() -> dict:
    ops = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            ops[op] = _sdpa_flops
    return ops


@torch.no_grad()
def flops_per_image(model: MAE, mask_ratio: float | None = None) -> dict[str, int]:
    """FLOPs of one training-style forward (masking, encoder on the visible patches, decoder on all of them,
    loss) for one image: {"total", "attention", "linear"}. The model is not changed."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = torch.zeros(1, model.in_chans, *model.img_size, device=device)
        noise = torch.rand(1, model.num_patches, generator=torch.Generator().manual_seed(0)).to(device)
        with FlopCounterMode(display=False, custom_mapping=_sdpa_ops()) as counter:
            model(x, mask_ratio, noise=noise)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts().get("Global", {})
    attention = sum(v for k, v in counts.items() if "scaled_dot_product" in str(k))
    total = int(counter.get_total_flops())
    return {"total": total, "attention": int(attention), "linear": total - int(attention)}
