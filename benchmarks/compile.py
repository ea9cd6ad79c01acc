"""torch.compile on the CPU training step of configuration (a) of benchmarks/throughput.py (ViT-Tiny-sized MAE,
28x28x1, patch 4, batch 256): eager vs compiled step time and the compile time.

    .venv/bin/python benchmarks/compile.py
"""

import time

import torch

from maekit.models.mae import MAE, ModelConfig


def main() -> None:
    cfg = ModelConfig(
        img_size=[28, 28],
        in_chans=1,
        patch_size=4,
        embed_dim=192,
        depth=12,
        num_heads=3,
        decoder_embed_dim=128,
        decoder_depth=4,
        decoder_num_heads=4,
    ).resolved((28, 28), 1)
    torch.manual_seed(0)
    model = MAE(cfg)
    x = torch.randn(256, 1, 28, 28)
    opt = torch.optim.AdamW(model.parameters())

    def step(f) -> None:
        loss, _, _ = f(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(f, n: int = 5) -> float:
        t = time.perf_counter()
        for _ in range(n):
            step(f)
        return (time.perf_counter() - t) / n

    for _ in range(2):
        step(model)
    eager = timed(model)
    t = time.perf_counter()
    compiled = torch.compile(model)
    step(compiled)
    step(compiled)
    compile_s = time.perf_counter() - t
    comp = timed(compiled)
    print(
        f"eager {eager:.3f} s/step ({256 / eager:.0f} img/s); compiled {comp:.3f} s/step ({256 / comp:.0f} img/s); "
        f"speed-up {eager / comp:.2f}x; compile {compile_s:.0f} s"
        + (f"; pays back after {compile_s / (eager - comp):.0f} steps" if eager > comp else "")
    )


if __name__ == "__main__":
    main()
