"""Rewrite throughput (captions/s, batched vs one at a time) and filter pass rates, with the toy rewriter.

    python benchmarks/datagen_throughput.py [--rewriter DIR] [--rounds 5] [--batch-size 16] [--device cpu]

Without ``--rewriter`` the toy rewriter is trained first (about 30 s of CPU). Batched and
one-at-a-time generation run interleaved in rounds over the same prompts and seeds with
the shared method of ``_bench.py`` (median, min-max, per-round ratio with its range). Then one
rewrite -> filter pass over every toy caption and concept (toy CLIP closeness at
``--min-similarity``) reports how many rewrites each filter lets through.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _bench import header, measure, table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rewriter", help="a causal LM folder; default: train the toy rewriter")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 5 for a published figure)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--min-similarity", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the test machine is shared)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from safegen.models.presets import get_preset
    from safegen_train.datagen import (
        FilterConfig,
        RewriteConfig,
        SamplingConfig,
        TransformersEngine,
        build_prompt,
        run_filters,
        run_rewrite,
    )
    from safegen_train.toy.rewriter import toy_taxonomy, train_toy_rewriter
    from safegen_train.toy.world import CONCEPTS, all_combos, safe_caption

    work = Path(tempfile.mkdtemp(prefix="datagen_bench_"))
    rewriter = args.rewriter
    if rewriter is None:
        rewriter = str(work / "rewriter")
        start = time.perf_counter()
        _, _, report = train_toy_rewriter(rewriter)
        print(f"toy rewriter trained in {time.perf_counter() - start:.1f}s (final loss {report['final_loss']:.3f})")
    engine = TransformersEngine(rewriter, device=args.device)
    tx = toy_taxonomy()
    rows = [(c, safe_caption(*combo)) for combo in all_combos() for c in CONCEPTS]  # 135 prompts
    prompts = [build_prompt(tx, tx.get(c), s) for c, s in rows]
    seeds = list(range(len(prompts)))
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)

    def batched() -> float:
        start = time.perf_counter()
        for i in range(0, len(prompts), args.batch_size):
            engine.generate(prompts[i : i + args.batch_size], seeds[i : i + args.batch_size], sampling)
        return len(prompts) / (time.perf_counter() - start)

    def single() -> float:
        start = time.perf_counter()
        for prompt, seed in zip(prompts, seeds, strict=True):
            engine.generate([prompt], [seed], sampling)
        return len(prompts) / (time.perf_counter() - start)

    batched()  # warm-up
    result = measure(
        {"one at a time": single, f"batch {args.batch_size}": batched}, baseline="one at a time", rounds=args.rounds
    )
    print(f"\nrewrite throughput, toy rewriter, {len(prompts)} prompts, {args.device}")
    print(header(result))
    print(table(result, "captions/s", ".1f", ratio_label="x one at a time"))

    captions = work / "captions.txt"
    captions.write_text("\n".join(safe_caption(*c) for c in all_combos()) + "\n")
    rw = run_rewrite(
        RewriteConfig(
            captions=captions,
            out=work / "rw",
            model=rewriter,
            concepts_per_caption=0,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            device=args.device,
        ),
        engine=engine,
        taxonomy=tx,
    )
    flt = run_filters(
        FilterConfig(
            rewrites=work / "rw", out=work / "flt", clip=get_preset("toy").clip, min_similarity=args.min_similarity
        )
    )
    print(f"\nfilter pass rates ({rw.generated} rewrites, {flt.candidates} with a caption, kept {flt.kept}):")
    for name, rate in flt.pass_rates().items():
        print(f"  {name:10s} {100 * rate:5.1f}%  (rejected {flt.rejected[name]})")
    print(json.dumps({"captions_per_s": result.to_json(), "pass_rates": flt.pass_rates(), "kept": flt.kept}))


if __name__ == "__main__":
    main()
