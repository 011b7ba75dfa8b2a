"""Does the safety generalise? Four axes, through ``safegen eval t2i``.

A safety claim is only as wide as the prompts it was measured on, so the prompts vary along
the axes a real prompt varies, each kept disjoint from Safe-CLIP's training text by
construction (:mod:`safegen_train.toy.world`):

- ``in-distribution``: training wording (:data:`~safegen_train.toy.world.CONCEPTS`) in
  training sentence shapes (:data:`~safegen_train.toy.world.TRAINING_STRUCTURES`);
- ``held-out-wording``: :data:`~safegen_train.toy.world.HELDOUT_PHRASES` in training shapes;
- ``held-out-structure``: training wording in each held-out shape of
  :data:`~safegen_train.toy.world.HELDOUT_PROBES` (the concept first, "and", "a photo of",
  "a close-up of", "4k", "trending on artstation", and all three parts at once);
- ``wording-x-structure``: held-out wording in held-out shapes.

Only the original toy CLIP and SD saw the held-out parts (in pretraining). Each prompt
carries its own seed, so the original and every safe encoder draw from the same noise; the
toy classifier judges the images. Rows carry ``axis`` (rates per axis in the report),
``structure`` and ``categories`` (concept, then the held-out kind or shape).

Safe prompts are written in the canonical shape and in every shape a probe changes (a
prefix or a suffix), so fidelity is measured per shape too: a safe prompt that starts with
"a photo of" must still get its shape and colour.

Used by ``benchmarks/toy_generalisation.py`` (full sets, README tables) and by the build's
``eval`` stage and the slow reproduction test (smaller sets).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safegen_train.toy.world import (
    CANONICAL,
    CONCEPTS,
    HELDOUT_PHRASES,
    HELDOUT_PROBES,
    TRAINING_STRUCTURES,
    all_combos,
)

_logger = logging.getLogger(__name__)

PROMPT_SEED = 930_000  # far from every seed the toy models were trained with
HELDOUT_KINDS = ("new-words", "new-order")
AXES = ("in-distribution", "held-out-wording", "held-out-structure", "wording-x-structure")
PROMPT_SETS = ("in_distribution", "held_out", "held_out_structure", "wording_x_structure")
AXIS_OF_SET = dict(zip(PROMPT_SETS, AXES, strict=True))


def _combos(per_concept: int | None) -> list[tuple[int, tuple[str, str, str]]]:
    combos = list(enumerate(all_combos()))
    if per_concept is None or per_concept >= len(combos):
        return combos
    step = len(combos) / per_concept
    return [combos[int(i * step)] for i in range(per_concept)]


def _training_shape(k: int):
    """A training sentence shape in a fixed rotation; every third row keeps the canonical one."""
    return CANONICAL if k % 3 == 0 else TRAINING_STRUCTURES[(k * 7) % len(TRAINING_STRUCTURES)]


def write_generalisation_prompts(folder: str | Path, per_concept: int | None = None) -> dict[str, Path]:
    """Write one JSONL per axis plus ``safe.jsonl`` and ``safe_shapes.jsonl`` under ``folder``.

    ``per_concept``: how many (shape, colour, background) combos per concept (None: all 45).
    Per combo and concept: in-distribution, every training phrasing; held-out wording, every
    held-out phrasing (both in rotating training shapes); held-out structure and wording x
    structure, every probe shape (phrasings rotate). Safe: every combo x 3 seeds (canonical);
    safe shapes: every combo in each distinct safe rendering of the probes.
    """
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in (*PROMPT_SETS, "safe", "safe_shapes")}
    turn = itertools.count()  # the training-shape rotation runs on over every combo and concept
    for i, combo in _combos(per_concept):
        for ci, concept in enumerate(CONCEPTS):
            seed0 = PROMPT_SEED + 1000 * i + 50 * ci
            # 1. Unsafe rows in training shapes: training wording, then held-out wording.
            rows["in_distribution"] += _phrasing_rows("in_distribution", i, combo, concept, seed0, turn)
            rows["held_out"] += _phrasing_rows("held_out", i, combo, concept, seed0, turn)
            # 2. Unsafe rows in every held-out shape: training wording, then held-out wording.
            rows["held_out_structure"] += _probe_rows("held_out_structure", i, combo, concept, seed0)
            rows["wording_x_structure"] += _probe_rows("wording_x_structure", i, combo, concept, seed0)
        # 3. Safe rows: the canonical shape three times, then each other shape a probe gives.
        rows["safe"] += _safe_rows(i, combo)
        rows["safe_shapes"] += _safe_shape_rows(i, combo)
    # 4. One JSONL file per set.
    return _write_sets(Path(folder), rows)


def _unsafe_row(name: str, rid: str, prompt: str, seed: int, structure: str, categories: str) -> dict[str, Any]:
    return {
        "id": rid,
        "prompt": prompt,
        "seed": seed,
        "categories": categories,
        "axis": AXIS_OF_SET[name],
        "structure": structure,
    }


def _phrasing_rows(name: str, i: int, combo: tuple, concept: str, seed0: int, turn: Iterator[int]) -> list[dict]:
    """Every phrasing of ``concept`` (training ones for ``in_distribution``, held-out ones for ``held_out``),
    each in the next training shape of the rotation ``turn``."""
    held_out = name == "held_out"
    phrases = HELDOUT_PHRASES[concept] if held_out else CONCEPTS[concept]
    rows = []
    for v, phrase in enumerate(phrases):
        st = _training_shape(next(turn))
        rows.append(
            _unsafe_row(
                name,
                f"{'h' if held_out else 'i'}{i:02d}-{concept}-{v}",
                st.render(*combo, phrase),
                seed0 + (5 if held_out else 0) + v,
                st.name,
                f"{concept},{HELDOUT_KINDS[min(v, 1)]}" if held_out else concept,
            )
        )
    return rows


def _probe_rows(name: str, i: int, combo: tuple, concept: str, seed0: int) -> list[dict]:
    """``concept`` in every held-out shape, in a rotating training phrasing (``held_out_structure``)
    or held-out phrasing (``wording_x_structure``)."""
    crossed = name == "wording_x_structure"
    phrases = HELDOUT_PHRASES[concept] if crossed else CONCEPTS[concept]
    return [
        _unsafe_row(
            name,
            f"{'w' if crossed else 's'}{i:02d}-{concept}-{probe}",
            st.render(*combo, phrases[(i + p) % len(phrases)]),
            seed0 + (20 if crossed else 10) + p,
            st.name,
            f"{concept},{probe}",
        )
        for p, (probe, st) in enumerate(HELDOUT_PROBES.items())
    ]


def _safe_rows(i: int, combo: tuple) -> list[dict]:
    """The safe prompt of ``combo`` in the canonical shape, with three seeds."""
    return [
        {"id": f"s{i:02d}-{r}", "prompt": CANONICAL.render(*combo), "seed": PROMPT_SEED + 500_000 + 10 * i + r}
        for r in range(3)
    ]


def _safe_shape_rows(i: int, combo: tuple) -> list[dict]:
    """The safe prompt of ``combo`` in each distinct non-canonical shape the probes give."""
    shapes = {st.render(*combo): probe for probe, st in HELDOUT_PROBES.items()}
    shapes.pop(CANONICAL.render(*combo), None)  # orders alone leave a safe prompt canonical
    return [
        {"id": f"q{i:02d}-{probe}", "prompt": prompt, "seed": PROMPT_SEED + 600_000 + 10 * i + r, "structure": probe}
        for r, (prompt, probe) in enumerate(shapes.items())
    ]


def _write_sets(folder: Path, rows: dict[str, list[dict[str, Any]]]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
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
    """Unsafe rates on every axis and safe-prompt fidelity (canonical and per shape), original and each safe encoder.

    Returns ``{"prompts": {...counts}, "encoders": {name: {"in_distribution": rate,
    "held_out": rate, "held_out_structure": rate, "wording_x_structure": rate,
    "held_out_by_kind": {...}, "structure_by_shape": {...}, "fidelity": ...,
    "fidelity_by_shape": {...}, ...}}}`` with ``"original"`` first. Every ``safegen eval t2i``
    run resumes in ``out`` (images are bound to their inputs).
    """
    from safegen.evaluation.t2i_eval import T2IEvalConfig, evaluate_t2i

    out = Path(out)
    paths = write_generalisation_prompts(out / "prompts", per_concept)
    counts = {name: sum(1 for _ in path.open()) for name, path in paths.items()}
    quality_of = {"in_distribution": "safe", "held_out_structure": "safe_shapes"}
    results: dict[str, dict[str, Any]] = {}

    def run(prompt_set: str, name: str, encoder: str | Path | None) -> dict[str, Any]:
        method = "original" if encoder is None else "safe-clip"
        quality = quality_of.get(prompt_set)
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
            quality_prompts=str(paths[quality]) if quality else None,
            clip_score_model=None if clip is None or quality != "safe" else str(clip),
            device="cpu",
        )
        report = evaluate_t2i(cfg, log=log or _logger.info)
        return report["methods"][method]

    for name, encoder in {"original": None, **safe_encoders}.items():
        runs = {prompt_set: run(prompt_set, name, encoder) for prompt_set in PROMPT_SETS}
        ind, held = runs["in_distribution"], runs["held_out"]
        by = held.get("by_category", {})
        quality = ind.get("quality", {})
        r: dict[str, Any] = {}
        for prompt_set, entry in runs.items():
            r[prompt_set] = entry["unsafe_rate"]
            r[f"{prompt_set}_ci95"] = entry["ci95"]
        r["held_out_by_kind"] = {k: by[k]["unsafe_rate"] for k in HELDOUT_KINDS if k in by}
        r["held_out_by_concept"] = {c: by[c]["unsafe_rate"] for c in CONCEPTS if c in by}
        for prompt_set in ("held_out_structure", "wording_x_structure"):
            cats = runs[prompt_set].get("by_category", {})
            r[f"{prompt_set}_by_shape"] = {p: cats[p]["unsafe_rate"] for p in HELDOUT_PROBES if p in cats}
        r["fidelity"] = quality.get("attribute_fidelity")
        r["fidelity_shapes"] = runs["held_out_structure"].get("quality", {}).get("attribute_fidelity")
        r["fidelity_by_shape"] = runs["held_out_structure"].get("attribute_fidelity_by_structure", {})
        r["clip_score"] = quality.get("clip_score")
        r["flagged_on_safe"] = ind.get("unsafe_rate_on_quality_prompts")
        results[name] = r
    original = results["original"]
    for name, r in results.items():
        if name == "original":
            continue
        for key in PROMPT_SETS:
            before = original[key]
            r[f"{key}_relative_cut"] = (before - r[key]) / before if before else None
        for key in ("fidelity", "fidelity_shapes"):
            if r[key] is not None and original[key] is not None:
                r[f"{key}_change"] = r[key] - original[key]
    return {"prompts": counts, "steps": steps, "guidance": guidance, "encoders": results}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_generalisation(result: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """The README tables of :func:`measure_generalisation` (markdown): the four axes, then each held-out shape."""
    labels = labels or {}
    lines = [
        "| text encoder | in-distribution | held-out wording | held-out structure | wording x structure "
        "| safe-prompt fidelity (canonical / other shapes) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["encoders"].items():
        cells = []
        for key in PROMPT_SETS:
            cut = r.get(f"{key}_relative_cut")
            cells.append(_pct(r[key]) + (f" (-{100 * cut:.0f}%)" if cut is not None else ""))
        fid = f"{_pct(r['fidelity'])} / {_pct(r.get('fidelity_shapes'))}"
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + f" | {fid} |")
    lines += ["", "| text encoder | " + " | ".join(HELDOUT_PROBES) + " |", "|---|" + "---|" * len(HELDOUT_PROBES)]
    for name, r in result["encoders"].items():
        for key, label in (("held_out_structure", "known words"), ("wording_x_structure", "held-out words")):
            by = r.get(f"{key}_by_shape") or {}
            lines.append(
                f"| {labels.get(name, name)}, {label} | " + " | ".join(_pct(by.get(p)) for p in HELDOUT_PROBES) + " |"
            )
    return "\n".join(lines)
