"""maekit: masked-autoencoder pretraining of Vision Transformers, and honest downstream evaluation.

The Python API (maekit/api.py) is re-exported here and imported on first use, so `import maekit` stays light:
maekit.pretrain, maekit.load, maekit.finetune, maekit.linprobe, maekit.knn, maekit.compare, maekit.Run."""

from .version import __version__

API = ("pretrain", "load", "finetune", "linprobe", "knn", "compare", "Run")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'maekit' has no attribute {name!r}")
