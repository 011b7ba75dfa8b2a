"""Validation: the paper's retrieval table (recall@K on S-V, S-G, U-V, U-G) and the validation loss.

Galleries pair row i of a text set with row i of an image set:

- S-V: safe text t  / safe image v       - S-G: safe text t  / generated unsafe image v*
- U-V: unsafe text t* / safe image v     - U-G: unsafe text t* / unsafe image v*

each scored text-to-image (``t2i``) and image-to-text (``i2t``) with
``safegen.retrieval.recall_at_k``. The released early-stopping "recall-sum" is R@1 of S-V,
S-G and U-V in both directions (U-G left out on purpose).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from safegen.retrieval import GALLERIES, recall_sum  # noqa: F401  (recall_sum re-exported for train/cli)
from safegen.retrieval import retrieval_table as shared_retrieval_table

_logger = logging.getLogger(__name__)

KS = (1, 5, 10, 20)


def _batches(dataset: Any, collate: Any, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        yield collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


@torch.no_grad()
def embed_dataset(
    clip: Any, dataset: Any, collate: Any, *, batch_size: int = 64, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Projected embeddings (N, D) of every text and image of a :class:`~safegen_train.data.PairDataset`."""
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in _batches(dataset, collate, batch_size):
        for side in ("safe", "unsafe"):
            out = clip.text_model(
                input_ids=batch[f"{side}_input_ids"].to(device),
                attention_mask=batch[f"{side}_attention_mask"].to(device),
            )
            chunks.setdefault(f"{side}_text", []).append(clip.text_projection(out.pooler_output).float().cpu())
            if f"{side}_image_pixels" in batch:
                vout = clip.vision_model(pixel_values=batch[f"{side}_image_pixels"].to(device))
                chunks.setdefault(f"{side}_image", []).append(clip.visual_projection(vout.pooler_output).float().cpu())
    return {k: torch.cat(v) for k, v in chunks.items()}


def retrieval_table(
    embeddings: dict[str, torch.Tensor], ks: Sequence[int] = KS
) -> dict[str, dict[str, dict[int, float]]]:
    """``{gallery: {"t2i": {K: recall%}, "i2t": {...}}}`` for the galleries the embeddings allow.

    A thin adapter from :func:`embed_dataset`'s dict to :func:`safegen.retrieval.retrieval_table`,
    so training and ``safegen eval`` share one implementation.
    """
    return shared_retrieval_table(
        embeddings["safe_text"],
        embeddings["unsafe_text"],
        embeddings.get("safe_image"),
        embeddings.get("unsafe_image"),
        ks=ks,
    )


def flatten_table(table: dict[str, dict[str, dict[int, float]]]) -> dict[str, float]:
    """``{"S-V/t2i/R@1": 12.5, ...}`` for metrics lines and trackers."""
    return {f"{g}/{d}/R@{k}": v for g, dirs in table.items() for d, ks in dirs.items() for k, v in ks.items()}


def format_table(tables: dict[str, dict[str, dict[str, dict[int, float]]]]) -> str:
    """A markdown table of one or more retrieval tables side by side (columns: model x R@K)."""
    names = list(tables)
    if not names or not any(tables.values()):
        return "(no image galleries: the data has no images, so no retrieval table)"
    ks = sorted({k for t in tables.values() for dirs in t.values() for r in dirs.values() for k in r})
    header = "| gallery | direction | " + " | ".join(f"{n} R@{k}" for n in names for k in ks) + " |"
    sep = "|" + "---|" * (2 + len(names) * len(ks))
    rows = [header, sep]
    galleries = [g for g in GALLERIES if any(g in t for t in tables.values())]
    for g in galleries:
        for d in ("t2i", "i2t"):
            cells = []
            for n in names:
                vals = tables[n].get(g, {}).get(d, {})
                cells += [f"{vals[k]:.1f}" if k in vals else "-" for k in ks]
            rows.append(f"| {g} | {d} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


@torch.no_grad()
def validation_loss(module: Any, loss_fn: Any, dataset: Any, collate: Any, *, batch_size: int, device: Any) -> dict:
    """Mean of every loss part over the validation set, in batches of ``batch_size`` (the
    InfoNCE terms depend on the batch size, so it is the training batch)."""
    sums: dict[str, float] = {}
    count = 0
    was_training = module.training
    module.eval()
    try:
        for batch in _batches(dataset, collate, batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            parts = loss_fn(**module(batch))
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
    finally:
        module.train(was_training)
    return {k: v / max(count, 1) for k, v in sums.items()}
