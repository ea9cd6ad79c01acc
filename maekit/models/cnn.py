"""A small supervised CNN: the baseline a user would train instead of a ViT (any channel count, any image size).

Three 3x3 conv stages (width, 2 width, 4 width) with BatchNorm and ReLU, 2x2 max-pooling after the first two,
global average pooling, dropout and a linear head. Pure torch.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, in_chans: int, num_classes: int, width: int = 32, dropout: float = 0.3):
        super().__init__()

        def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        self.features = nn.Sequential(
            *stage(in_chans, width, True),
            *stage(width, 2 * width, True),
            *stage(2 * width, 4 * width, False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> logits [N, num_classes]."""
        return self.head(self.head_drop(self.features(x)))
