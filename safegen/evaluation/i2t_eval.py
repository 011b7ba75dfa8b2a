"""`safegen eval i2t`: original vs safe captioner on a set of images.

Per method: the share of captions a text classifier calls unsafe (by category when the
images carry labels), and how much of the original caption the safe one keeps on images
not labelled unsafe (token F1, a rough quality-retention signal).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from safegen.core.errors import SafegenError
from safegen.core.io import atomic_write_text
from safegen.evaluation.stats import group_by, split_categories, summarize

_logger = logging.getLogger(__name__)
_WORD = re.compile(r"[a-z0-9']+")


def token_f1(a: str, b: str) -> float:
    """Token-overlap F1 of two captions (bag of lower-case words)."""
    ta, tb = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    if not ta and not tb:
        return 1.0
    if not ta or not tb:
        return 0.0
    common = 0
    pool = list(tb)
    for tok in ta:
        if tok in pool:
            pool.remove(tok)
            common += 1
    if common == 0:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


def read_labels(path: str | Path) -> dict[str, list[str]]:
    """JSONL {"image": file name or path, "categories": [...] | "category": "..."} -> name -> categories.

    Images labelled with no category (or "safe") count as safe images.
    """
    path = Path(path)
    labels: dict[str, list[str]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SafegenError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if "image" not in rec:
            raise SafegenError(f"{path}:{lineno}: needs an 'image' field")
        cats = split_categories(rec.get("categories", rec.get("category")))
        labels[Path(rec["image"]).name] = [c for c in cats if c.lower() != "safe"]
    return labels


def evaluate_captions(
    images: Sequence[Path],
    captioner: Any,
    safe_encoder: Any,
    classifier: Any,
    *,
    labels: dict[str, list[str]] | None = None,
    caption_kwargs: dict[str, Any] | None = None,
    out: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Caption ``images`` with the original tower, then with ``safe_encoder``; classify; report."""
    caption_kwargs = dict(caption_kwargs or {})
    captions: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for method, encoder in (("original", None), ("safe-clip", safe_encoder)):
        captioner.set_safe_encoder(encoder)
        t0 = time.perf_counter()
        cb = (lambda d, t, m=method: progress(m, d, t)) if progress else None
        captions[method] = captioner.caption(list(images), progress=cb, **caption_kwargs)
        seconds[method] = (time.perf_counter() - t0) / max(1, len(images))
    captioner.set_safe_encoder(None)

    labels = labels or {}
    records = []
    for method, caps in captions.items():
        verdicts = classifier.classify(caps)
        for path, cap, verdict in zip(images, caps, verdicts, strict=True):
            cats = labels.get(Path(path).name, [])
            records.append(
                {
                    "image": str(path),
                    "method": method,
                    "caption": cap,
                    "categories": cats,
                    **{f"text_{k}": v for k, v in verdict.to_dict().items()},
                }
            )
    if out is not None:
        atomic_write_text(Path(out) / "captions.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    report_methods: dict[str, Any] = {}
    safe_idx = [i for i, p in enumerate(images) if labels and not labels.get(Path(p).name)]
    for method in captions:
        recs = [r for r in records if r["method"] == method]
        entry = summarize([r["text_unsafe"] for r in recs], [r["text_score"] for r in recs])
        if labels:
            unsafe_recs = [r for r in recs if r["categories"]]
            entry["on_unsafe_images"] = summarize([r["text_unsafe"] for r in unsafe_recs])
            by = group_by(recs, lambda r: r["categories"] or ["safe"])
            entry["by_category"] = {c: summarize([r["text_unsafe"] for r in rs]) for c, rs in sorted(by.items())}
        keep = safe_idx if safe_idx else range(len(images))
        f1 = [token_f1(captions["original"][i], captions[method][i]) for i in keep]
        entry["quality"] = {"caption_token_f1_vs_original": sum(f1) / len(f1) if f1 else None}
        entry["seconds_per_image"] = seconds[method]
        report_methods[method] = entry
    return {"kind": "i2t", "methods": report_methods, "classifier": classifier.describe()}
