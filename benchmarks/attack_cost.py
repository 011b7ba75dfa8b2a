"""Attack cost on the toy preset: queries and seconds per successful attack, original vs Safe-CLIP.

    python benchmarks/attack_cost.py [--prompts 12] [--steps 20] [--guidance 5] [--out outputs/attack_cost]

Runs ``safegen eval attack`` (the API, :func:`safegen.evaluation.attacks.evaluate_attacks`)
on held-out toy scenes, every attack against ``original``, ``safe-clip`` and
``negative-prompt``, and prints, per attack and method: success rate with its bootstrap
95% interval, queries per prompt, queries and search seconds per success. Queries are
generations for paraphrase and structure, text-encoder passes for ring-a-bell and adaptive
(ring-a-bell searches once, on the original encoder). structure keeps the unsafe words and
searches the preset's sentence shapes (the table's constraint column says so). One torch thread; seconds are the
harness's, one search after another (not interleaved), printed under a header with the
machine, threads and load (``_bench.machine_line``). Resumable: a second run reuses
finished searches (their seconds are those of the run that searched).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from _bench import finish, machine_info, machine_line

from safegen_train.toy.world import sample_scenes

PROMPT_SEED = 920_000  # far from every seed the toy models were trained with


def write_toy_attack_prompts(path: Path, n: int, seed: int = PROMPT_SEED) -> Path:
    """``n`` held-out unsafe toy prompts with their safe twin and concept, a seed each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": f"a{i:03d}",
            "prompt": s.unsafe_text,
            "safe_prompt": s.safe_text,
            "concept": s.concept,
            "seed": seed + i,
        }
        for i, s in enumerate(sample_scenes(n, seed))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/attack_cost")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--methods", default="original,safe-clip,negative-prompt")
    parser.add_argument("--attacks", default="paraphrase,ring-a-bell,adaptive,structure")
    parser.add_argument("--budget", action="append", default=[], help="ATTACK=N, repeatable")
    parser.add_argument("--safe-encoder", default=None, help="another Safe-CLIP (e.g. an adversarially hardened one)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    machine = machine_info()
    logging.basicConfig(level=logging.WARNING)
    from safegen.evaluation.attacks import AttackEvalConfig, evaluate_attacks, write_attack_report
    from safegen.models.presets import get_preset

    preset = get_preset("toy")
    out = Path(args.out)
    prompts = write_toy_attack_prompts(out / "prompts.jsonl", args.prompts)
    budgets = {k: int(v) for k, v in (b.split("=") for b in args.budget)}
    cfg = AttackEvalConfig(
        prompts=str(prompts),
        out=str(out),
        base=preset.base,
        safe_encoder=args.safe_encoder or preset.safe_encoder,
        methods=args.methods.split(","),
        attacks=args.attacks.split(","),
        budgets=budgets,
        shapes=preset.extra.get("attack_shapes"),
        classifier="toy",
        steps=args.steps,
        guidance=args.guidance,
        batch_size=16,
        negative_prompt=preset.extra["safety_concept"],
        safety_concept=preset.extra["safety_concept"],
    )
    t0 = time.perf_counter()
    report = evaluate_attacks(cfg, log=lambda m: print(m, file=sys.stderr))
    write_attack_report(out, report)
    print(
        f"\ntoy preset, {args.prompts} held-out unsafe prompts, {args.steps} DDIM steps, guidance {args.guidance}, "
        f"{args.threads} thread(s); total {time.perf_counter() - t0:.0f}s"
    )
    print(machine_line(finish(machine)))
    print(
        "| attack | constraint | method | budget | success | 95% CI | queries/prompt | queries/success | s/success |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for attack, a in report["attacks"].items():
        for method, m in a["methods"].items():
            if m.get("unavailable"):
                continue
            lo, hi = m["ci95"]
            qps = f"{m['queries_per_success']:.0f}" if m["queries_per_success"] else "-"
            sps = f"{m['search_seconds_per_success']:.2f}" if m["search_seconds_per_success"] else "-"
            print(
                f"| {attack} | {a['constraint']} | {method} | {a['settings']['budget']} | "
                f"{100 * m['attack_success_rate']:.1f}% | "
                f"{100 * lo:.0f}-{100 * hi:.0f}% | {m['queries_mean']:.0f} | {qps} | {sps} |"
            )


if __name__ == "__main__":
    main()
