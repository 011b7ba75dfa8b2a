"""Quality retention: CLIP score with a CLIP the user names, FID when an implementation is installed."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

from safegen.core.errors import SafegenError

_logger = logging.getLogger(__name__)


class ClipScorer:
    """CLIP score (Hessel et al. 2021 scaling): 100 * max(cos(image, text), 0), per image.

    ``source`` is any transformers CLIPModel folder or hub id with its processor (the toy
    CLIP for the toy preset; ``openai/clip-vit-large-patch14`` is the usual choice).
    Encoding goes through :class:`safegen.models.clip_embedder.ClipEmbedder`, the one CLIP encoder
    of the package.
    """

    def __init__(self, source: str, device: str = "cpu", batch_size: int = 32):
        from safegen.models.clip_embedder import ClipEmbedder  # torch: the CLIP score is optional in eval

        self.source = source
        self.retriever = ClipEmbedder.from_pretrained(source, device=device, batch_size=batch_size)

    def __call__(self, images: Sequence[Any], prompts: Sequence[str]) -> list[float]:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        img = self.retriever.encode_images(list(images))  # (N, D), unit norm
        txt = self.retriever.encode_texts(list(prompts))  # (N, D), unit norm
        cos = (img * txt).sum(dim=-1)  # (N,)
        return (100.0 * cos.clamp(min=0)).tolist()


def fid_available() -> str | None:
    """The installed FID implementation ("torchmetrics" or "clean-fid"), or None."""
    if importlib.util.find_spec("torchmetrics") and importlib.util.find_spec("scipy"):
        return "torchmetrics"
    if importlib.util.find_spec("cleanfid"):
        return "clean-fid"
    return None


def fid(reference: Sequence[Any], generated: Sequence[Any]) -> float:
    """FID between two image sets with torchmetrics' Inception (needs its weights cached locally)."""
    impl = fid_available()
    if impl != "torchmetrics":
        raise SafegenError("FID needs torchmetrics with scipy (`pip install 'safegen[eval]' torchmetrics scipy`)")
    import numpy as np
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048, normalize=False)

    def batch(images: Sequence[Any]) -> Any:
        arr = np.stack([np.asarray(im.convert("RGB").resize((299, 299))) for im in images])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    metric.update(batch(reference), real=True)
    metric.update(batch(generated), real=False)
    return float(metric.compute())
