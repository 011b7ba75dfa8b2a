"""Safe cross-modal retrieval and the paper's retrieval metric.

``recall_at_k`` is the one implementation shared by safegen-train's validation,
``safegen eval retrieval`` and the toy-world benchmarks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_logger = logging.getLogger(__name__)


def recall_at_k(queries: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = (1, 5, 10, 20)) -> dict[int, float]:
    """Recall@K in percent for index-paired queries and gallery (row i matches row i).

    Ranking is by cosine similarity. A query counts as a hit at K when its own gallery
    item is among the K most similar (ties broken against the query: an item scoring
    exactly as high as the match ranks ahead of it, so a collapsed, constant embedding
    scores 0 for every K < N instead of looking perfect).
    """
    import torch

    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape != gallery.shape:
        raise ValueError(f"queries and gallery must both be (N, D), got {tuple(queries.shape)} and {tuple(gallery.shape)}")
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    g = torch.nn.functional.normalize(gallery.float(), dim=-1)
    sims = q @ g.T  # (N, N)
    own = sims.diagonal().unsqueeze(1)  # (N, 1)
    # rank = number of gallery items at least as similar as the match, excluding itself
    rank = (sims >= own).sum(dim=1) - 1  # (N,)
    n = queries.shape[0]
    return {int(k): float((rank < k).float().mean().item() * 100.0) if n else 0.0 for k in ks}
