"""Model-level building blocks: the CLIP embedder, Safe-CLIP encoders (load, convert,
inject), LoRA adapters, open_clip conversion, tokenizers and presets.

Imports only from :mod:`safegen.core`; pipelines, safety, retrieval and evaluation build on it.
"""
