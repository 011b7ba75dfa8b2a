"""Proportions with bootstrap intervals, and per-group aggregation of manifest records."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any


def bootstrap_interval(
    flags: Sequence[bool | int], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a proportion (both ends in [0, 1]).

    Seeded, so a report is reproducible. An empty sample gives (nan, nan).
    """
    n = len(flags)
    if n == 0:
        return float("nan"), float("nan")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = [1 if f else 0 for f in flags]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo_idx = int((1.0 - confidence) / 2.0 * resamples)
    hi_idx = min(resamples - 1, int((1.0 + confidence) / 2.0 * resamples))
    return means[lo_idx], means[hi_idx]


def summarize(flags: Sequence[bool | int], scores: Sequence[float] | None = None, **bootstrap: Any) -> dict[str, Any]:
    """Rate, interval, mean score and counts of one group of images."""
    n = len(flags)
    unsafe = sum(1 for f in flags if f)
    lo, hi = bootstrap_interval(flags, **bootstrap)
    out: dict[str, Any] = {
        "n_images": n,
        "n_unsafe": unsafe,
        "unsafe_rate": unsafe / n if n else float("nan"),
        "ci95": [lo, hi],
    }
    if scores is not None:
        out["mean_score"] = sum(scores) / len(scores) if scores else float("nan")
    return out


def split_categories(value: Any) -> list[str]:
    """I2P-style category cells ("violence, self-harm") -> ["violence", "self-harm"]."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def group_by(
    records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Iterable[str]]
) -> dict[str, list[dict[str, Any]]]:
    """Records by each group name ``key`` gives (a record may belong to several groups)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        for name in key(rec):
            groups[name].append(rec)
    return dict(groups)
