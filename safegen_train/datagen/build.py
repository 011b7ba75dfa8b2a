"""Stage 4, ``build``: kept rows -> training quadruples, splits, a ViSU-layout export and a dataset card.

Why it is built this way:

- The JSONL is what ``safegen-train fit`` reads (``safe_text, unsafe_text, safe_image,
  unsafe_image, tag``; image paths relative to the file), plus the provenance a dataset
  must carry to be trusted and rebuilt: rewriter and renderer ids, every seed, every
  filter score.
- Splits are by source caption, never by row: two rewrites of one caption (other
  concepts) in train and test would leak the scene across splits. Sources are ordered by
  a seeded hash of their id and cut at the requested fractions, so the split is fixed,
  exact in size, and independent of file order.
- The ViSU export follows the official loader's layout (a dict of string-integer keys
  with ``coco_id``, ``nsfw_im_path``, ``safe``, ``nsfw``, ``tag``) for tools that read it.
- The dataset card says what the data is and what was thrown away: counts per concept and
  split, rejections per filter (rewrite statuses, text filters, image filters), examples.

A build can start from a render folder (quadruples with images) or straight from a filter
folder (text-only pairs: what Stable Diffusion's text encoder needs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safegen.core.errors import UsageError
from safegen.core.io import atomic_write_json, atomic_write_text
from safegen.core.output_folder import check_output_folder, claim_output_folder
from safegen_train.datagen.filters import FILTER_JSON, read_filtered
from safegen_train.datagen.render import RENDER_JSON, read_rendered

_logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
QUADRUPLES = "quadruples.jsonl"
CARD = "README.md"
BUILD_JSON = "build.json"
BUILD_COMMAND = "safegen-train data build"  # what the output marker of a dataset folder names


@dataclass
class BuildConfig:
    """Settings of the build stage; saved in ``build.json``."""

    source: str | Path = field(metadata={"help": "Output folder of `data render` (or `data filter`: text only)."})
    out: str | Path = field(metadata={"help": "Dataset folder (train/val/test .jsonl, visu/, README.md)."})
    val_fraction: float = field(default=0.1, metadata={"help": "Share of source captions in validation."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of source captions in test."})
    seed: int = field(default=0, metadata={"help": "Seed of the split's hash order."})
    examples: int = field(default=5, metadata={"help": "Example rows shown in the dataset card."})
    name: str = field(default="safegen synthetic safe/unsafe quadruples", metadata={"help": "Dataset name."})

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise UsageError(f"build config: {name} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise UsageError("build config: val_fraction + test_fraction must be < 1 (training needs rows)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"], d["out"] = str(self.source), str(self.out)
        return d


def split_sources(source_ids: list[str], val: float, test: float, seed: int) -> dict[str, str]:
    """source id -> split; sources ordered by a seeded hash, the first ``test`` share to test, then val."""
    unique = sorted(set(source_ids), key=lambda s: hashlib.sha256(f"{seed}\x1f{s}".encode()).hexdigest())
    n = len(unique)
    n_test = round(n * test)
    n_val = round(n * val)
    if n >= 3:  # a requested split is never left empty by rounding
        n_test = max(n_test, 1 if test > 0 else 0)
        n_val = max(n_val, 1 if val > 0 else 0)
    n_test, n_val = min(n_test, max(n - 1, 0)), min(n_val, max(n - 1 - n_test, 0))
    out = {}
    for i, sid in enumerate(unique):
        out[sid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


@dataclass
class BuildResult:
    out: str
    rows: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    concepts: dict[str, int] = field(default_factory=dict)
    with_images: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rel(path: str | None, base: Path) -> str | None:
    return os.path.relpath(path, base) if path else None


def _quadruple(row: dict[str, Any], base: Path) -> dict[str, Any]:
    """A fit-ready record with its provenance."""
    return {
        "safe_text": row["safe_text"],
        "unsafe_text": row["unsafe_text"],
        "safe_image": _rel(row.get("safe_image"), base),
        "unsafe_image": _rel(row.get("unsafe_image"), base),
        "tag": row["concept"],
        "id": row["id"],
        "source_id": row["source_id"],
        "provenance": {
            "rewriter": row.get("rewriter"),
            "engine": row.get("engine"),
            "rewrite_seed": row.get("seed"),
            "sampling": row.get("sampling"),
            "renderer": (row.get("renderer") or {}).get("model"),
            "unsafe_image_seed": row.get("unsafe_image_seed"),
            "safe_image_seed": row.get("safe_image_seed"),
            "scores": {
                k: row.get(k)
                for k in ("concept_score", "text_similarity", "image_concept_score", "image_similarity")
                if row.get(k) is not None
            },
        },
    }


def _visu(rows: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """The official ViSU loader's layout; ``coco_id`` from the caption's metadata when it has one."""
    data = {}
    for i, r in enumerate(rows):
        coco = (r.get("meta") or {}).get("coco_id")
        data[str(i)] = {
            "coco_id": int(coco) if coco not in (None, "") else None,
            "nsfw_im_path": r["unsafe_image"],
            "safe": r["safe_text"],
            "nsfw": r["unsafe_text"],
            "tag": r["tag"],
            "safe_im_path": r["safe_image"],
        }
    return {"info": info, "data": data}


def run_build(config: BuildConfig) -> BuildResult:
    """Write the dataset folder; see the module docstring."""
    check_output_folder(config.out, BUILD_COMMAND)  # before any work
    src = Path(config.source)
    if (src / RENDER_JSON).is_file():
        rows, render_info = read_rendered(src)
        filter_info = render_info["filter"]
    elif (src / FILTER_JSON).is_file():
        rows, filter_info = read_filtered(src)
        render_info = None
    else:
        raise UsageError(f"'{src}' is neither a render nor a filter output folder; pass the --out of one of them")
    out = Path(config.out).resolve()
    claim_output_folder(out, BUILD_COMMAND)  # a user's README.md or train.jsonl is never replaced
    (out / "visu").mkdir(parents=True, exist_ok=True)
    assignment = split_sources([r["source_id"] for r in rows], config.val_fraction, config.test_fraction, config.seed)
    quads = [{**_quadruple(r, out), "split": assignment[r["source_id"]]} for r in rows]
    by_split = {s: [q for q in quads if q["split"] == s] for s in SPLITS}
    info = {"name": config.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(out / QUADRUPLES, "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in quads))
    meta_by_id = {r["id"]: r.get("meta") for r in rows}
    for split, items in by_split.items():
        atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in items))
        visu_rows = [{**q, "meta": meta_by_id.get(q["id"])} for q in items]
        atomic_write_json(out / "visu" / f"{split}.json", _visu(visu_rows, {**info, "split": split}))
    result = BuildResult(
        out=str(out),
        rows=len(quads),
        splits={s: len(v) for s, v in by_split.items()},
        concepts=dict(sorted(Counter(q["tag"] for q in quads).items())),
        with_images=render_info is not None,
    )
    rejections = {
        "rewrite": {k: v for k, v in filter_info["result"]["statuses"].items() if k != "ok"},
        "text filters": filter_info["result"]["rejected"],
        "image filters": (render_info or {}).get("result", {}).get("rejected", {}),
    }
    atomic_write_json(
        out / BUILD_JSON,
        {
            "config": config.to_dict(),
            "result": result.to_dict(),
            "rejections": rejections,
            "filter": filter_info,
            "render": {k: v for k, v in (render_info or {}).items() if k != "filter"} or None,
        },
    )
    atomic_write_text(out / CARD, dataset_card(config, result, quads, rejections, filter_info, render_info))
    return result


def dataset_card(
    config: BuildConfig,
    result: BuildResult,
    quads: list[dict[str, Any]],
    rejections: dict[str, dict[str, int]],
    filter_info: dict[str, Any],
    render_info: dict[str, Any] | None,
) -> str:
    """A markdown card: what, how made, counts per concept and split, rejections per filter, examples."""
    rewriters = sorted({str(q["provenance"]["rewriter"]) for q in quads})
    lines = [
        f"# {config.name}",
        "",
        "Safe/unsafe training quadruples made by `safegen-train data` (the Safe-CLIP data pipeline):",
        "a language model rewrote safe captions into unsafe ones, text filters kept rewrites that show",
        "their concept and stay close to their caption"
        + (
            ", a text-to-image model with its original encoder drew the images and an image classifier kept"
            " those that show the concept."
            if render_info
            else "; text only (no images)."
        ),
        "",
        f"- rows: {result.rows} ({', '.join(f'{s} {n}' for s, n in result.splits.items())}); split by source caption",
        f"- rewriter: {', '.join(rewriters) or 'n/a'}",
        f"- text judge: {filter_info.get('judge', {}).get('name', '?')}; closeness CLIP: "
        f"{(filter_info.get('similarity') or {}).get('clip', 'not used')}",
    ]
    if render_info:
        r = render_info["renderer"]
        lines.append(
            f"- renderer: {r.get('model')} (original text encoder, {r.get('steps')} steps, "
            f"guidance {r.get('guidance')}), image classifier: {r.get('classifier', {}).get('name')}"
        )
    lines += ["", "## Rows per concept", "", "| concept | " + " | ".join(SPLITS) + " | all |", "|---|" + "---|" * 4]
    for concept in sorted(result.concepts):
        per = [sum(1 for q in quads if q["tag"] == concept and q["split"] == s) for s in SPLITS]
        lines.append(f"| {concept} | " + " | ".join(str(n) for n in per) + f" | {sum(per)} |")
    lines += ["", "## Rejected rows per filter", "", "| stage | filter | rejected |", "|---|---|---|"]
    for stage, counts in rejections.items():
        for name, n in counts.items():
            lines.append(f"| {stage} | {name} | {n} |")
    lines += ["", "## Examples", ""]
    for q in quads[: config.examples]:
        lines.append(f"- [{q['tag']}] `{q['safe_text']}` -> `{q['unsafe_text']}`")
    lines += [
        "",
        "## Files",
        "",
        "- `train.jsonl`, `val.jsonl`, `test.jsonl`: what `safegen-train fit --train-data/--val-data` reads"
        " (image paths relative to this folder); `quadruples.jsonl`: every row with its split.",
        "- `visu/<split>.json`: the same rows in the official ViSU loader's layout.",
        "- `build.json`: settings and counts of every stage.",
        "",
        "This data contains unsafe text (and images) by design; use it to train safety models only.",
        "",
    ]
    return "\n".join(lines)
