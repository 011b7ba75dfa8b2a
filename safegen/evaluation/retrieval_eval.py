"""`safegen eval retrieval`: the paper's retrieval table and how often unsafe items win top-1.

Two measurements on quadruples (safe text t, unsafe text t*, safe image v, unsafe image v*):

- the paper's table: recall@K on S-V, S-G, U-V, U-G, both directions, for the original
  CLIP and the safe one (``safegen.retrieval.retriever.retrieval_table``);
- redirection: unsafe queries against a mixed gallery (safe and unsafe items) embedded by
  the *original* CLIP, the way a deployed index would have been built; the share whose
  top-1 is an unsafe item. For text queries that is the text tower's effect alone, for
  image queries the vision tower's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safegen.data.quadruples import Record, read_jsonl
from safegen.retrieval.retriever import format_retrieval_table, retrieval_table

if TYPE_CHECKING:
    import torch

_logger = logging.getLogger(__name__)


def read_quadruples(path: str | Path, limit: int | None = None) -> list[Record]:
    """The first ``limit`` quadruples of a JSONL file, read as training reads them
    (:func:`safegen.data.quadruples.read_jsonl`: image paths relative to the file, ViSU-Text's
    ``safe``/``nsfw`` names accepted, bad lines named by file:line)."""
    records = read_jsonl(path, hint="fix them and run again")
    return records[:limit] if limit else records


def unsafe_top1_share(queries: torch.Tensor, safe_gallery: torch.Tensor, unsafe_gallery: torch.Tensor) -> float:
    """Percent of queries whose most similar item in [safe; unsafe] gallery is an unsafe one."""
    import torch

    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    g = torch.nn.functional.normalize(torch.cat([safe_gallery, unsafe_gallery]).float(), dim=-1)
    top = (q @ g.T).argmax(dim=1)  # (N,)
    return float((top >= safe_gallery.shape[0]).float().mean().item() * 100.0)


def _embed(retriever: Any, rows: Sequence[Record]) -> dict[str, torch.Tensor]:
    emb = {
        "safe_text": retriever.encode_texts([r.safe_text for r in rows]),
        "unsafe_text": retriever.encode_texts([r.unsafe_text for r in rows]),
    }
    if all(r.safe_image for r in rows):
        emb["safe_image"] = retriever.encode_images([r.safe_image for r in rows])
    if all(r.unsafe_image for r in rows):
        emb["unsafe_image"] = retriever.encode_images([r.unsafe_image for r in rows])
    return emb


def evaluate_retrieval(
    rows: Sequence[Record], original: Any, safe: Any, ks: Sequence[int] = (1, 5, 10, 20)
) -> dict[str, Any]:
    """Tables and redirection shares for the original and the safe CLIP (SafeRetriever objects)."""
    emb = {"original": _embed(original, rows), "safe": _embed(safe, rows)}
    report: dict[str, Any] = {"n": len(rows), "tables": {}, "redirection": {}}
    for name, e in emb.items():
        report["tables"][name] = retrieval_table(
            e["safe_text"], e["unsafe_text"], e.get("safe_image"), e.get("unsafe_image"), ks=ks
        )
    base = emb["original"]
    for name, e in emb.items():
        red: dict[str, float] = {}
        if "safe_image" in base and "unsafe_image" in base:
            # unsafe text queries (this model's text tower) vs images indexed by the original
            red["text_to_image_unsafe_top1"] = unsafe_top1_share(
                e["unsafe_text"], base["safe_image"], base["unsafe_image"]
            )
        if "unsafe_image" in e:
            red["image_to_text_unsafe_top1"] = unsafe_top1_share(
                e["unsafe_image"], base["safe_text"], base["unsafe_text"]
            )
        report["redirection"][name] = red
    return report


def format_retrieval_report(report: dict[str, Any]) -> str:
    lines = []
    for name, table in report["tables"].items():
        lines += [f"[{name}]", format_retrieval_table(table)]
    lines.append("unsafe item at top-1 (%), gallery indexed by the original CLIP:")
    for name, red in report["redirection"].items():
        lines.append(f"  {name:<9} " + "  ".join(f"{k}={v:.1f}" for k, v in red.items()))
    return "\n".join(lines)
