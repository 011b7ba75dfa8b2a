"""Does the safety generalise? In-distribution vs held-out wording, through ``safegen eval t2i``.

In-distribution prompts use the concept phrasings every Safe-CLIP training set contains
(:data:`~safegen_train.toy.world.CONCEPTS`); held-out prompts use
:data:`~safegen_train.toy.world.HELDOUT_PHRASES`, which only the original toy CLIP and SD
saw (in pretraining). Each prompt carries its own seed, so the original and every safe
encoder draw from the same noise; the toy classifier judges the images.

Held-out prompts are tagged by kind, ``new-words`` (the phrase's first entry: vocabulary
no Safe-CLIP training text has) and ``new-order`` (known words in another order), so the
report's per-category figures tell the two apart.

Used by ``benchmarks/toy_generalisation.py`` (full sets, README tables) and by the build's
``eval`` stage and the slow reproduction test (smaller sets).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .world import CONCEPTS, HELDOUT_PHRASES, all_combos, safe_caption

_logger = logging.getLogger(__name__)

PROMPT_SEED = 930_000  # far from every seed the toy models were trained with
HELDOUT_KINDS = ("new-words", "new-order")


def _combos(per_concept: int | None) -> list[tuple[int, tuple[str, str, str]]]:
    combos = list(enumerate(all_combos()))
    if per_concept is None or per_concept >= len(combos):
        return combos
    step = len(combos) / per_concept
    return [combos[int(i * step)] for i in range(per_concept)]


def write_generalisation_prompts(folder: str | Path, per_concept: int | None = None) -> dict[str, Path]:
    """Write ``in_distribution.jsonl``, ``held_out.jsonl`` and ``safe.jsonl`` under ``folder``.

    ``per_concept``: how many (shape, colour, background) combos per concept (None: all 45).
    In-distribution: every combo x concept x training phrasing; held-out: every combo x
    concept x held-out phrasing; safe: every combo x 3 seeds.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict[str, Any]]] = {"in_distribution": [], "held_out": [], "safe": []}
    for i, combo in _combos(per_concept):
        base = safe_caption(*combo)
        for ci, concept in enumerate(CONCEPTS):
            for v, phrase in enumerate(CONCEPTS[concept]):
                rows["in_distribution"].append(
                    {
                        "id": f"i{i:02d}-{concept}-{v}",
                        "prompt": f"{base} {phrase}",
                        "seed": PROMPT_SEED + 1000 * i + 10 * ci + v,
                        "categories": concept,
                    }
                )
            for v, phrase in enumerate(HELDOUT_PHRASES[concept]):
                rows["held_out"].append(
                    {
                        "id": f"h{i:02d}-{concept}-{v}",
                        "prompt": f"{base} {phrase}",
                        "seed": PROMPT_SEED + 1000 * i + 10 * ci + 5 + v,
                        "categories": f"{concept},{HELDOUT_KINDS[min(v, 1)]}",
                    }
                )
        for k in range(3):
            rows["safe"].append({"id": f"s{i:02d}-{k}", "prompt": base, "seed": PROMPT_SEED + 500_000 + 10 * i + k})
    paths = {}
    for name, items in rows.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in items))
    return paths


def measure_generalisation(
    out: str | Path,
    *,
    base: str | Path,
    safe_encoders: dict[str, str | Path],
    clip: str | Path | None = None,
    per_concept: int | None = None,
    steps: int = 20,
    guidance: float = 5.0,
    batch_size: int = 16,
    log: Any = None,
) -> dict[str, Any]:
    """Unsafe rates on both prompt sets and safe-prompt fidelity for the original and each safe encoder.

    Returns ``{"prompts": {...counts}, "encoders": {name: {"in_distribution": rate,
    "held_out": rate, "held_out_by_kind": {...}, "fidelity": ..., ...}}}`` with ``"original"``
    first. Every ``safegen eval t2i`` run resumes in ``out`` (images are bound to their inputs).
    """
    from safegen.evaluation.t2i_eval import T2IEvalConfig, evaluate_t2i

    out = Path(out)
    paths = write_generalisation_prompts(out / "prompts", per_concept)
    counts = {name: sum(1 for _ in path.open()) for name, path in paths.items()}
    results: dict[str, dict[str, Any]] = {}

    def run(prompt_set: str, name: str, encoder: str | Path | None) -> dict[str, Any]:
        method = "original" if encoder is None else "safe-clip"
        cfg = T2IEvalConfig(
            prompts=str(paths[prompt_set]),
            out=str(out / prompt_set / name),
            base=str(base),
            safe_encoder=None if encoder is None else str(encoder),
            methods=[method],
            classifier="toy",
            steps=steps,
            guidance=guidance,
            batch_size=batch_size,
            quality_prompts=str(paths["safe"]) if prompt_set == "in_distribution" else None,
            clip_score_model=None if clip is None else str(clip),
            device="cpu",
        )
        report = evaluate_t2i(cfg, log=log or _logger.info)
        return report["methods"][method]

    for name, encoder in {"original": None, **safe_encoders}.items():
        ind = run("in_distribution", name, encoder)
        held = run("held_out", name, encoder)
        by = held.get("by_category", {})
        quality = ind.get("quality", {})
        results[name] = {
            "in_distribution": ind["unsafe_rate"],
            "in_distribution_ci95": ind["ci95"],
            "held_out": held["unsafe_rate"],
            "held_out_ci95": held["ci95"],
            "held_out_by_kind": {k: by[k]["unsafe_rate"] for k in HELDOUT_KINDS if k in by},
            "held_out_by_concept": {c: by[c]["unsafe_rate"] for c in CONCEPTS if c in by},
            "fidelity": quality.get("attribute_fidelity"),
            "clip_score": quality.get("clip_score"),
            "flagged_on_safe": ind.get("unsafe_rate_on_quality_prompts"),
        }
    original = results["original"]
    for name, r in results.items():
        if name == "original":
            continue
        for key in ("in_distribution", "held_out"):
            before = original[key]
            r[f"{key}_relative_cut"] = (before - r[key]) / before if before else None
        if r["fidelity"] is not None and original["fidelity"] is not None:
            r["fidelity_change"] = r["fidelity"] - original["fidelity"]
    return {"prompts": counts, "steps": steps, "guidance": guidance, "encoders": results}


def format_generalisation(result: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """The README table of :func:`measure_generalisation` (markdown)."""
    labels = labels or {}
    lines = [
        "| text encoder | unsafe: in-distribution wording | unsafe: held-out wording | held-out new words "
        "| held-out new order | safe-prompt attribute fidelity |",
        "|---|---|---|---|---|---|",
    ]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    for name, r in result["encoders"].items():
        cut = ""
        if name != "original":
            parts = [r.get("in_distribution_relative_cut"), r.get("held_out_relative_cut")]
            cut = [f" (-{100 * c:.0f}% relative)" if c is not None else "" for c in parts]
        kinds = r["held_out_by_kind"]
        lines.append(
            f"| {labels.get(name, name)} | {pct(r['in_distribution'])}{cut[0] if cut else ''} "
            f"| {pct(r['held_out'])}{cut[1] if cut else ''} | {pct(kinds.get('new-words'))} "
            f"| {pct(kinds.get('new-order'))} | {pct(r['fidelity'])} |"
        )
    return "\n".join(lines)
