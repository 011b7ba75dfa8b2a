"""The toy-world table of `safegen eval t2i`: every method, unsafe rate, fidelity, time per image.

Prompts come from held-out toy scenes: 270 unsafe prompts (45 shape/colour/background
combos x 3 concepts x 2 phrasings) and 225 safe prompts (45 combos x 5 seeds), each with
its own seed. Everything runs through `safegen eval t2i` with the toy preset, so the
numbers are the harness's own; the output folder is resumable. Seconds per image are the
harness's, one method after another (not interleaved); the header line records the
machine, threads and load they were taken under (``_bench.machine_line``).

    python benchmarks/toy_eval.py [--out outputs/toy_eval] [--steps 20] [--guidance 5] [--limit N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _bench import finish, machine_info, machine_line

from safegen.evaluation.report import write_report
from safegen.evaluation.t2i_eval import T2IEvalConfig, evaluate_t2i
from safegen.models.presets import get_preset
from safegen_train.toy.world import CONCEPTS, all_combos, safe_caption, unsafe_caption

METHODS = ["original", "safe-clip", "negative-prompt", "sld-medium", "sld-strong", "safe-clip+sld-medium"]
PROMPT_SEED = 910_000  # far from every seed the toy models were trained with


def write_prompts(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    unsafe, safe = [], []
    for i, (shape, colour, bg) in enumerate(all_combos()):
        for ci, concept in enumerate(CONCEPTS):
            for variant in range(2):
                unsafe.append(
                    {
                        "id": f"u{i:02d}-{concept}-{variant}",
                        "prompt": unsafe_caption(shape, colour, bg, concept, variant),
                        "seed": PROMPT_SEED + 100 * i + 10 * ci + variant,
                        "categories": concept,
                    }
                )
        for k in range(5):
            safe.append(
                {
                    "id": f"s{i:02d}-{k}",
                    "prompt": safe_caption(shape, colour, bg),
                    "seed": PROMPT_SEED + 50_000 + 10 * i + k,
                }
            )
    paths = folder / "toy_unsafe.jsonl", folder / "toy_safe.jsonl"
    for path, rows in zip(paths, (unsafe, safe), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/toy_eval")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="first N prompts of each set (a quick check)")
    args = parser.parse_args()
    machine = machine_info()

    out = Path(args.out)
    unsafe, safe = write_prompts(out / "prompts")
    preset = get_preset("toy")
    cfg = T2IEvalConfig(
        prompts=str(unsafe),
        out=str(out),
        base=preset.base,
        safe_encoder=preset.safe_encoder,
        methods=METHODS,
        classifier=preset.extra["classifier"],
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch_size,
        negative_prompt=preset.extra["safety_concept"],
        safety_concept=preset.extra["safety_concept"],
        quality_prompts=str(safe),
        clip_score_model=preset.clip,
        device="cpu",
        limit=args.limit,
        quality_limit=args.limit,
    )
    report = evaluate_t2i(cfg, log=print)
    write_report(out, report)
    sizes = "270 unsafe + 225 safe prompts" if args.limit is None else f"first {args.limit} of each prompt set"
    print(f"\ntoy world, {args.steps} DDIM steps, guidance {args.guidance}; {sizes}, own seeds")
    print(machine_line(finish(machine)))
    print(
        "| method | unsafe rate (95% CI) | blood | fire | gun | safe-prompt fidelity | CLIP score | "
        "unsafe on safe prompts | s/image |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in report["methods"].items():
        if m.get("unavailable"):
            print(f"| {name} | unavailable: {m['unavailable']} | | | | | | | |")
            continue
        lo, hi = m["ci95"]
        by = m.get("by_category", {})
        q = m.get("quality", {})
        cats = " | ".join(f"{100 * by[c]['unsafe_rate']:.1f}%" if c in by else "-" for c in CONCEPTS)
        print(
            f"| {name} | {100 * m['unsafe_rate']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}) | {cats} | "
            f"{100 * q.get('attribute_fidelity', float('nan')):.1f}% | {q.get('clip_score', float('nan')):.2f} | "
            f"{100 * m['unsafe_rate_on_quality_prompts']:.1f}% | {m['seconds_per_image']:.4f} |"
        )


if __name__ == "__main__":
    main()
