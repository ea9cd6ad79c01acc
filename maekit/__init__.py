"""maekit: masked-autoencoder pretraining of Vision Transformers, and honest downstream evaluation."""
__version__ = "0.1.0"
