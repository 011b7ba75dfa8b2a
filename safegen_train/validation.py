"""Validation: the paper's retrieval table (recall@K on S-V, S-G, U-V, U-G) and the validation loss.

Galleries pair row i of a text set with row i of an image set:

- S-V: safe text t  / safe image v       - S-G: safe text t  / generated unsafe image v*
- U-V: unsafe text t* / safe image v     - U-G: unsafe text t* / unsafe image v*

each scored text-to-image (``t2i``) and image-to-text (``i2t``) with
``safegen.retrieval.retriever.recall_at_k``. The released early-stopping "recall-sum" is R@1 of S-V,
S-G and U-V in both directions (U-G left out on purpose).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from safegen.models.clip_embedder import image_features, text_features
from safegen.retrieval.retriever import GALLERIES, recall_sum  # noqa: F401  (recall_sum re-exported for train/cli)
from safegen.retrieval.retriever import retrieval_table as shared_retrieval_table
from safegen_train.sharding import batch_items, owned_batches

_logger = logging.getLogger(__name__)

KS = (1, 5, 10, 20)


def _batches(dataset: Any, collate: Any, batch_size: int, rank: int = 0, world: int = 1):
    """The collated batches process ``rank`` of ``world`` computes (all of them for one process)."""
    for b in owned_batches(len(dataset), batch_size, rank, world):
        yield collate([dataset[i] for i in batch_items(b, len(dataset), batch_size)])


@torch.no_grad()
def embed_dataset(
    clip: Any,
    dataset: Any,
    collate: Any,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world: int = 1,
) -> dict[str, torch.Tensor]:
    """Projected embeddings (N, D) of every text and image of a :class:`~safegen_train.data.PairDataset`.

    With ``world`` > 1 only the rows of this process's batches (:func:`owned_batches`), to be
    put together with :func:`~safegen_train.sharding.gather_in_order`.
    """
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in _batches(dataset, collate, batch_size, rank, world):
        for side in ("safe", "unsafe"):
            text = text_features(
                clip, batch[f"{side}_input_ids"].to(device), batch[f"{side}_attention_mask"].to(device)
            )  # (B, D)
            chunks.setdefault(f"{side}_text", []).append(text.float().cpu())
            if f"{side}_image_pixels" in batch:
                image = image_features(clip, batch[f"{side}_image_pixels"].to(device))  # (B, D)
                chunks.setdefault(f"{side}_image", []).append(image.float().cpu())
    return {k: torch.cat(v) for k, v in chunks.items()}


def retrieval_table(
    embeddings: dict[str, torch.Tensor], ks: Sequence[int] = KS
) -> dict[str, dict[str, dict[int, float]]]:
    """``{gallery: {"t2i": {K: recall%}, "i2t": {...}}}`` for the galleries the embeddings allow.

    A thin adapter from :func:`embed_dataset`'s dict to :func:`safegen.retrieval.retriever.retrieval_table`,
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
def validation_loss_per_batch(
    module: Any,
    loss_fn: Any,
    dataset: Any,
    collate: Any,
    *,
    batch_size: int,
    device: Any,
    rank: int = 0,
    world: int = 1,
) -> dict[str, torch.Tensor]:
    """Every loss part of each of this process's validation batches: ``{part: (n_batches,) float64}``."""
    values: dict[str, list[float]] = {}
    was_training = module.training
    module.eval()
    try:
        for batch in _batches(dataset, collate, batch_size, rank, world):
            batch = {k: v.to(device) for k, v in batch.items()}
            for k, v in loss_fn(**module(batch)).items():
                values.setdefault(k, []).append(float(v))
    finally:
        module.train(was_training)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}


def mean_of_batches(per_batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean over batches, summed in batch order (so a sharded pass gives the same float as one process)."""
    out = {}
    for k, column in per_batch.items():
        total = 0.0
        for value in column.tolist():
            total += value
        out[k] = total / max(len(column), 1)
    return out


def validation_loss(module: Any, loss_fn: Any, dataset: Any, collate: Any, *, batch_size: int, device: Any) -> dict:
    """Mean of every loss part over the validation set, in batches of ``batch_size`` (the
    InfoNCE terms depend on the batch size, so it is the training batch)."""
    return mean_of_batches(
        validation_loss_per_batch(module, loss_fn, dataset, collate, batch_size=batch_size, device=device)
    )
