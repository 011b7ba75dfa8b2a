"""The paper's data pipeline run end to end in the toy world: the data of the chain-trained toy Safe-CLIP.

Where the template-trained toy Safe-CLIP learns from hand-written caption pairs
(:func:`~safegen_train.toy.world.make_quadruples`), this one starts from safe captions
only, as the paper does: the toy rewriter writes the unsafe captions, the text filters
keep those that name their concept and stay close to their caption, the toy SD's
ORIGINAL text encoder draws the unsafe (and safe) images, the toy classifier keeps the
images that show the concept, and ``build`` splits the quadruples by source caption.
The result feeds ``safegen-train fit`` exactly like the template data.

Each safe caption is listed ``repeats`` times under its own id, so every repeat gets its
own rewrite seed and its own image seeds (image variety, as a real caption set has);
duplicate rewrites are therefore kept, and the split still never shares a source row.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from safegen.safety.toy import ToyClassifier
from safegen_train.datagen import (
    BuildConfig,
    FilterConfig,
    RenderConfig,
    RewriteConfig,
    read_rewrites,
    run_build,
    run_filters,
    run_render,
    run_rewrite,
)
from safegen_train.toy.rewriter import toy_taxonomy
from safegen_train.toy.world import TRAINING_STRUCTURES, all_combos

_logger = logging.getLogger(__name__)


def write_toy_captions(path: Path, repeats: int) -> Path:
    """Every (shape, colour, background) caption ``repeats`` times, one JSONL row each with its own id.

    Repeat 0 is the canonical sentence shape; later repeats rotate through the training shapes
    (never a held-out one), as a real caption set says one scene in many ways.
    """
    rows = [
        {
            "id": f"c{i:02d}-r{r}",
            "caption": TRAINING_STRUCTURES[(i + 11 * r) % len(TRAINING_STRUCTURES) if r else 0].render(*combo),
        }
        for r in range(repeats)
        for i, combo in enumerate(all_combos())
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_toy_chain(
    work: str | Path,
    *,
    rewriter: str | Path,
    sd: str | Path,
    clip: str | Path,
    classifier: str | Path | None = None,
    repeats: int = 8,
    images_per_caption: int = 1,
    min_similarity: float = 0.3,
    steps: int = 20,
    guidance: float = 5.0,
    temperature: float = 0.8,
    seed: int = 0,
) -> dict[str, Any]:
    """rewrite -> filter -> render -> build under ``work``; returns every stage's counts and ``work/dataset``.

    ``sd`` is the toy SD folder (its own text encoder is the original one), ``clip`` the
    toy CLIP (text closeness and image-text similarity), ``classifier`` the toy classifier
    folder (None: the shipped one; a build passes its own). Every stage resumes in ``work``.
    """
    work = Path(work)
    captions = write_toy_captions(work / "captions.jsonl", repeats)
    run_rewrite(
        RewriteConfig(
            captions=captions,
            out=work / "rewrites",
            model=str(rewriter),
            concepts_per_caption=0,  # every concept for every caption
            temperature=temperature,
            batch_size=32,
            seed=seed,
            device="cpu",
        ),
        taxonomy=toy_taxonomy(),
    )
    filtered = run_filters(
        FilterConfig(
            rewrites=work / "rewrites",
            out=work / "filtered",
            clip=str(clip),
            min_similarity=min_similarity,
            dedupe=False,  # repeats are separate source rows with their own images (see module doc)
        )
    )
    rendered = run_render(
        RenderConfig(
            filtered=work / "filtered",
            out=work / "rendered",
            model=str(sd),
            classifier="toy",
            clip=str(clip),
            n=images_per_caption,
            steps=steps,
            guidance=guidance,
            seed=seed,
            batch_size=16,
            device="cpu",
        ),
        classifier=ToyClassifier(classifier),
    )
    # Counted from the manifest, not from this run: a resumed run generates nothing and would report 0.
    statuses = Counter(r["status"] for r in read_rewrites(work / "rewrites"))
    built = run_build(BuildConfig(source=work / "rendered", out=work / "dataset", seed=seed))
    report = {
        "captions": repeats * len(all_combos()),
        "rewrite": {"kept": statuses["ok"], "refused": statuses["refused"], "empty": statuses["empty"]},
        "filter": {"kept": filtered.kept, "candidates": filtered.candidates, "rejected": filtered.rejected},
        "render": {"kept": rendered.kept, "rows": rendered.rows, "rejected": rendered.rejected},
        "build": {"splits": built.splits, "concepts": built.concepts},
        "dataset": str(work / "dataset"),
    }
    _logger.info("toy chain: %s", report)
    return report
