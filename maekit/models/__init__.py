"""Pure model code: ViT encoder, MAE, masking, position embeddings, presets. Imports torch only."""
from .mae import MAE, ModelConfig, build_mae
from .vit import ViT

__all__ = ["MAE", "ModelConfig", "ViT", "build_mae"]
