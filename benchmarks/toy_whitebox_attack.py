"""White-box denoising-loss attacks (unlearndiff, p4d) on the toy preset: success, queries, optimisation steps.

    python benchmarks/toy_whitebox_attack.py [--prompts 24] [--methods original,safe-clip,negative-prompt,sld-medium]

Runs ``safegen eval attack --attacks unlearndiff,p4d`` through the API
(:func:`safegen.evaluation.attacks.evaluate_attacks`) on held-out unsafe toy prompts (the
same prompts and seeds as ``attack_cost.py``), then the CONTROL: ``unlearndiff`` with
``optimise=false``, fresh random words of the same length before every query, same query
budget, no gradient. An attack's success rate means something only above the control's:
prompts the toy SD never saw can make it draw an overlay, or the toy classifier see one.

Prints the command, the toy preset's commit, the machine line (``_bench.machine_line``),
then one table: success rate with its bootstrap 95% interval, queries (generations by the
attacked method judged by the classifier) and optimisation steps (UNet forward+backward
passes) per prompt and per success, search seconds per success, and a successful example
per attack and method. One torch thread; seconds are one run, methods in sequence.
Resumable: a second run reuses finished searches (their seconds are the first run's).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _bench import finish, machine_info, machine_line
from attack_cost import write_toy_attack_prompts

ROOT = Path(__file__).resolve().parents[1]


def preset_commit() -> str:
    """The last commit that changed the shipped toy preset (the figures belong to it)."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h %cs", "--", "safegen/assets/toy"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip() or "unknown (not a git checkout)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def run(args: argparse.Namespace, out: Path, attacks: list[str], options: dict, budgets: dict) -> dict:
    from safegen.evaluation.attacks import AttackEvalConfig, evaluate_attacks, write_attack_report
    from safegen.models.presets import get_preset

    preset = get_preset("toy")
    prompts = write_toy_attack_prompts(out / "prompts.jsonl", args.prompts)
    cfg = AttackEvalConfig(
        prompts=str(prompts),
        out=str(out),
        base=preset.base,
        safe_encoder=args.safe_encoder or preset.safe_encoder,
        methods=args.methods.split(","),
        attacks=attacks,
        budgets=budgets,
        attack_options=options,
        classifier="toy",
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        batch_size=16,
        negative_prompt=preset.extra["safety_concept"],
        safety_concept=preset.extra["safety_concept"],
    )
    report = evaluate_attacks(cfg, log=lambda m: print(m, file=sys.stderr))
    write_attack_report(out, report)
    return report


def print_table(report: dict, control: dict | None) -> None:
    """The markdown table of a white-box run, with the random-words control's rows when it ran."""
    print(
        "| attack | method | budget: queries x steps/query | success | 95% CI | queries/prompt | opt steps/prompt | "
        "queries/success | opt steps/success | s/success | a successful prompt |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for line in rows(report, {}):
        print(line)
    if control is not None:
        for line in rows(control, {"unlearndiff": "control: random words"}):
            print(line)


def rows(report: dict, label: dict[str, str]) -> list[str]:
    lines = []
    for attack, a in report["attacks"].items():
        s = a["settings"]
        for method, m in a["methods"].items():
            if m.get("unavailable"):
                lines.append(f"| {label.get(attack, attack)} | {method} | unavailable: {m['unavailable']} |")
                continue
            lo, hi = m["ci95"]

            def num(v, fmt="{:.0f}"):
                return fmt.format(v) if v is not None else "-"

            example = next((e["adversarial"] for e in m["examples"] if e["success"]), "-")
            lines.append(
                f"| {label.get(attack, attack)} | {method} | {s['budget']} x {s['steps_per_query']} | "
                f"{m['n_success']}/{m['n_prompts']} = {100 * m['attack_success_rate']:.1f}% | "
                f"{100 * lo:.0f}-{100 * hi:.0f}% | {m['queries_mean']:.1f} | {num(m['opt_steps_mean'])} | "
                f"{num(m['queries_per_success'], '{:.1f}')} | {num(m['opt_steps_per_success'])} | "
                f"{num(m['search_seconds_per_success'], '{:.2f}')} | `{example}` |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/toy_whitebox_attack")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of every generation")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0, help="attack seed")
    parser.add_argument("--methods", default="original,safe-clip,negative-prompt,sld-medium")
    parser.add_argument("--budget", type=int, default=None, help="queries per prompt (default: the attacks' own)")
    parser.add_argument("--steps-per-query", type=int, default=None, help="optimisation steps between queries")
    parser.add_argument("--no-control", action="store_true", help="skip the random-words control")
    parser.add_argument("--safe-encoder", default=None, help="another Safe-CLIP (e.g. an adversarially hardened one)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    machine = machine_info()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    attacks = ["unlearndiff", "p4d"]
    budgets = {a: args.budget for a in attacks} if args.budget else {}
    options = {a: {"steps_per_query": args.steps_per_query} for a in attacks} if args.steps_per_query else {}
    t0 = time.perf_counter()
    report = run(args, out, attacks, options, budgets)
    control = None
    if not args.no_control:
        ctl_options = {"unlearndiff": {**options.get("unlearndiff", {}), "optimise": False}}
        ctl_budgets = {"unlearndiff": budgets["unlearndiff"]} if budgets else {}
        control = run(args, out / "control", ["unlearndiff"], ctl_options, ctl_budgets)
    seconds = time.perf_counter() - t0

    print(f"\ncommand: python benchmarks/toy_whitebox_attack.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"toy preset: safegen/assets/toy at commit {preset_commit()}")
    print(
        f"{args.prompts} held-out unsafe toy prompts, {args.steps} DDIM steps, guidance {args.guidance}, "
        f"attack seed {args.seed}, {args.threads} thread(s); total {seconds:.0f}s"
    )
    print(machine_line(finish(machine)))
    print_table(report, control)
    cache = out / "attacks" / "unlearndiff" / f"{args.methods.split(',')[0]}.jsonl"
    searched = [json.loads(x) for x in cache.read_text().splitlines()[1:] if x.strip()]
    n_flagged = sum(bool(r["extra"].get("target_flagged")) for r in searched)
    print(f"\ntargets (original model, unsafe prompt) flagged by the toy classifier: {n_flagged}/{len(searched)}")


if __name__ == "__main__":
    main()
