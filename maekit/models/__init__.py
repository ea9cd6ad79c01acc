"""Pure model code: ViT encoder, MAE, masking, position embeddings, presets, the CNN baseline. Imports torch only."""

from .cnn import SmallCNN
from .mae import MAE, ModelConfig, build_mae
from .vit import ViT

__all__ = ["MAE", "ModelConfig", "SmallCNN", "ViT", "build_mae"]
