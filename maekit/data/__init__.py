"""Readers (one module per source), batched tensor transforms, and the config -> dataset -> batches loader."""
