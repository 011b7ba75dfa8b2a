"""The CLIP embedder: one way to load a transformers CLIP and turn images and texts into
unit-norm embeddings, used by the Q16 classifier, the CLIP score, training's validation and
the retriever (which adds an index on top, :class:`safegen.retrieval.retriever.SafeRetriever`).

``text_features`` / ``image_features`` are the projection of the pooled states, what
``CLIPModel.get_text_features`` / ``get_image_features`` compute; written out here so their
output is a tensor on every transformers version (5 returns an output object).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from safegen.core.devices import dtype_keyword
from safegen.core.errors import SafegenError
from safegen.core.hub import load_or_explain
from safegen.data.image_io import load_image
from safegen.models.remote_code import refuse_remote_code

_logger = logging.getLogger(__name__)


def text_features(clip: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Projected text embeddings (B, D) of a ``CLIPModel``, not normalised."""
    out = clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
    return clip.text_projection(out.pooler_output)  # (B, D)


def image_features(clip: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image embeddings (B, D) of a ``CLIPModel``, not normalised."""
    out = clip.vision_model(pixel_values=pixel_values)
    return clip.visual_projection(out.pooler_output)  # (B, D)


def normalise_model_id(source: str) -> str:
    """Local folders are recorded as absolute paths (so relative spellings match), hub ids as given."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def load_clip(
    source: str | Path, *, processor: Any = None, torch_dtype: torch.dtype | None = None, **hf_kwargs: Any
) -> tuple[Any, Any]:
    """(CLIPModel, CLIPProcessor) from a hub id or folder; code-shipping folders are refused.

    ``processor`` may name another source for the CLIPProcessor, for checkpoints that ship
    weights only (e.g. ``openai/clip-vit-large-patch14`` for a ViT-L/14 Safe-CLIP).
    """
    from transformers import CLIPModel, CLIPProcessor

    source = str(source)
    if torch_dtype is not None:
        hf_kwargs[dtype_keyword("transformers")] = torch_dtype
    refuse_remote_code(source)
    hf_kwargs["trust_remote_code"] = False
    model = load_or_explain(source, lambda: CLIPModel.from_pretrained(source, **hf_kwargs))
    if processor is None or isinstance(processor, (str, Path)):
        proc_source = str(processor or source)
        try:
            processor = load_or_explain(
                proc_source, lambda: CLIPProcessor.from_pretrained(proc_source, trust_remote_code=False)
            )
        except SafegenError as exc:
            raise SafegenError(
                f"no CLIPProcessor for '{proc_source}' ({exc}); pass the processor of the CLIP it was "
                "fine-tuned from (--processor openai/clip-vit-large-patch14 for ViT-L/14)"
            ) from exc
    return model, processor


class ClipEmbedder:
    """Unit-norm CLIP embeddings of images and texts, in batches.

    Args:
        model: a transformers ``CLIPModel``.
        processor: its ``CLIPProcessor``.
        batch_size: images or texts encoded per forward pass.
    """

    def __init__(self, model: Any, processor: Any, *, batch_size: int = 32):
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        processor: Any = None,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
        batch_size: int = 32,
        **hf_kwargs: Any,
    ) -> ClipEmbedder:
        model, processor = load_clip(source, processor=processor, torch_dtype=torch_dtype, **hf_kwargs)
        if device is not None:
            model = model.to(device)
        return cls(model, processor, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        """Unit-norm image embeddings (N, D), float32 on the CPU; items are PIL images or paths."""
        pil = [im if not isinstance(im, (str, Path)) else load_image(im) for im in images]
        return self._encode(pil, "image")

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings (N, D), float32 on the CPU (texts longer than CLIP's 77 tokens are cut)."""
        return self._encode(list(texts), "text")

    def _encode(self, inputs: list[Any], kind: str) -> torch.Tensor:
        chunks = [torch.zeros(0, self.dim)]
        dtype = next(self.model.parameters()).dtype
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start : start + self.batch_size]
            with torch.inference_mode():
                if kind == "image":
                    pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device, dtype)
                    emb = image_features(self.model, pixels)  # (B, D)
                else:
                    enc = self.processor(text=batch, return_tensors="pt", padding=True, truncation=True)
                    mask = enc.get("attention_mask")
                    emb = text_features(
                        self.model, enc["input_ids"].to(self.device), None if mask is None else mask.to(self.device)
                    )  # (B, D)
            chunks.append(torch.nn.functional.normalize(emb.float().cpu(), dim=-1))
        return torch.cat(chunks, dim=0)
