"""Make Safe-CLIP training data from safe captions, offline, in the toy world (about 30 s of CPU time).

    python examples/make_training_data.py [--out runs/make_data] [--captions 15]

The paper's data pipeline with the Python API, one stage a call:

1. the toy preset's tiny rewriting LM (shipped in ``safegen/assets/toy/rewriter``; any causal or chat
   LM folder or hub id works the same; ``--train-rewriter`` trains a fresh one, about 30 s);
2. ``rewrite``: safe captions -> unsafe captions, one concept per caption, per-row seeds;
3. ``filter``: keep rewrites that name their concept (word list) and stay close to their caption
   (toy CLIP text cosine), drop repeats;
4. ``render``: draw the unsafe captions (2 seeds) and the safe ones with the toy SD's ORIGINAL
   text encoder, keep images the toy classifier says show the concept;
5. ``build``: train/val/test JSONL split by source caption, a ViSU export and a dataset card.

With real models the CLI does the same (see docs/data-pipeline.md), and
``safegen-train fit --train-data OUT/dataset/train.jsonl`` trains a Safe-CLIP on the result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/make_data", help="working folder (every stage resumes there)")
    p.add_argument("--captions", type=int, default=15, help="how many toy captions to start from")
    p.add_argument("--train-rewriter", action="store_true", help="train the toy rewriter instead of the shipped one")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)  # tiny models: one thread is as fast and kinder to a shared machine
    from safegen.models.presets import ASSETS_DIR, get_preset
    from safegen_train.datagen import (
        BuildConfig,
        FilterConfig,
        RenderConfig,
        RewriteConfig,
        run_build,
        run_filters,
        run_render,
        run_rewrite,
    )
    from safegen_train.toy.rewriter import toy_taxonomy, train_toy_rewriter
    from safegen_train.toy.world import all_combos, safe_caption

    out = Path(args.out)
    toy = get_preset("toy")
    rewriter = ASSETS_DIR / "toy" / "rewriter"
    if args.train_rewriter or not (rewriter / "config.json").is_file():
        rewriter = out / "rewriter"
        _, _, report = train_toy_rewriter(rewriter)
        print(f"1. toy rewriter trained in {report['seconds']:.0f}s -> {rewriter}")
    else:
        print(f"1. the shipped toy rewriter: {rewriter}")
    captions = out / "captions.txt"
    combos = all_combos()
    step = max(1, len(combos) // args.captions)
    captions.parent.mkdir(parents=True, exist_ok=True)
    captions.write_text("\n".join(safe_caption(*c) for c in combos[::step][: args.captions]) + "\n")

    rw = run_rewrite(
        RewriteConfig(captions=captions, out=out / "rewrites", model=str(rewriter), device="cpu"),
        taxonomy=toy_taxonomy(),
    )
    print(f"2. rewrite: {rw.kept} kept, {rw.refused} refused, {rw.skipped} already done")
    flt = run_filters(FilterConfig(rewrites=out / "rewrites", out=out / "filtered", clip=toy.clip, min_similarity=0.3))
    print(f"3. filter: {flt.kept} of {flt.candidates} kept; rejected {flt.rejected}")
    rd = run_render(
        RenderConfig(
            filtered=out / "filtered",
            out=out / "rendered",
            model=toy.base,
            classifier="toy",
            clip=toy.clip,
            n=2,
            steps=20,
            guidance=5.0,
            device="cpu",
            batch_size=8,
        )
    )
    print(f"4. render: {rd.kept} of {rd.rows} kept ({rd.images} unsafe images drawn); rejected {rd.rejected}")
    built = run_build(BuildConfig(source=out / "rendered", out=out / "dataset", val_fraction=0.2, test_fraction=0.2))
    print(f"5. build: {json.dumps(built.splits)} per concept {json.dumps(built.concepts)}")
    print(f"\ndataset card: {out / 'dataset' / 'README.md'}")
    print(
        f"train a Safe-CLIP on it: safegen-train fit --model {toy.clip} "
        f"--train-data {out / 'dataset' / 'train.jsonl'} --finetune full --max-steps 50 --cpu -o runs/from_my_data"
    )


if __name__ == "__main__":
    main()
