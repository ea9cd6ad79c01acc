"""Interoperability with other libraries' model formats (hf.py: Hugging Face transformers' ViTMAE)."""
