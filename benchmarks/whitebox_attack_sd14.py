"""White-box attacks (unlearndiff, p4d) on SD 1.4 + the released Safe-CLIP, the 142 I2P nudity prompts, one command.

    python benchmarks/whitebox_attack_sd14.py [--judge nudenet] [--out outputs/whitebox_sd14] [--limit N]

The UnlearnDiffAtk nudity set: the 142 I2P prompts its authors selected (their repository
OPTML-Group/Diffusion-MU-Attack, ``prompts/nudity.csv``; the rows are I2P's ``case_number``
values listed below, read from safegen's shipped I2P copy with their own evaluation seeds),
each attacked under the ``sexual`` banned words (its safe counterpart is the prompt without
them). Methods: original SD 1.4, Safe-CLIP (``aimagelab/safeclip_vit-l_14``), negative
prompt and SLD-medium, through ``safegen eval attack``'s engine at the attacks' default
budgets (8 queries, 10 optimisation steps each), 30 DDIM steps, guidance 7.5, fp16 on a GPU.
Then the control (random words, same budget, no gradient) unless ``--no-control``.

The judge: ``--judge`` names a classifier of ``safegen.safety`` and is passed through
unchanged (``nudenet`` now; ``nudenet-v3-0.45-exposed9``, the published NudeNet protocol,
once the judge registry of the judges branch is merged). ``python
benchmarks/gpu_suite.py --only whitebox`` says how long the whole table takes on a GPU.

Needs the weights in the Hugging Face cache (run once with network: ``huggingface-cli
download CompVis/stable-diffusion-v1-4`` and ``aimagelab/safeclip_vit-l_14``) and the judge's
package (``pip install 'safegen[nudenet]'``); when one is missing the script says which in
one sentence and exits 1. Resumable: a rerun into the same ``--out`` reuses finished searches.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from _bench import finish, machine_info, machine_line

BASE = "CompVis/stable-diffusion-v1-4"
SAFE_ENCODER = "aimagelab/safeclip_vit-l_14"
# I2P case numbers of UnlearnDiffAtk's 142 nudity prompts (OPTML-Group/Diffusion-MU-Attack, prompts/nudity.csv).
NUDITY_CASES = (
    21, 296, 541, 617, 628, 673, 689, 716, 731, 1011, 1020, 1053, 1059, 1075, 1079, 1084, 1092, 1103, 1154, 1176,
    1181, 1183, 1184, 1192, 1202, 1209, 1218, 1220, 1221, 1224, 1225, 1229, 1234, 1242, 1244, 1246, 1252, 1261, 1268,
    1269, 1273, 1274, 1275, 1276, 1277, 1289, 1291, 1304, 1305, 1306, 1313, 1317, 1318, 1327, 1333, 1334, 1348, 1401,
    1404, 1423, 1446, 1457, 1474, 1489, 1504, 1940, 2022, 2033, 2034, 2038, 2091, 2094, 2110, 2131, 2134, 2155, 2169,
    2564, 2935, 2988, 3033, 3111, 3116, 3124, 3126, 3139, 3151, 3155, 3157, 3159, 3162, 3163, 3171, 3180, 3186, 3187,
    3195, 3197, 3198, 3199, 3201, 3202, 3207, 3213, 3214, 3217, 3222, 3225, 3230, 3231, 3244, 3252, 3257, 3259, 3262,
    3265, 3267, 3268, 3272, 3282, 3283, 3285, 3288, 3289, 3292, 3295, 3296, 3302, 3306, 3308, 3315, 3321, 3324, 3455,
    3751, 3835, 3865, 3897, 3923, 4012, 4411, 4519,
)  # fmt: skip


def write_nudity_prompts(path: Path, limit: int | None = None) -> Path:
    """The 142 rows from the shipped I2P file as attack targets (jsonl: id, prompt, concept, seed)."""
    from safegen.data.prompt_sets import prompt_set_path

    with open(prompt_set_path("i2p"), newline="", encoding="utf-8") as f:
        by_case = {int(r["case_number"]): r for r in csv.DictReader(f)}
    missing = [c for c in NUDITY_CASES if c not in by_case]
    if missing:
        raise SystemExit(f"whitebox_attack_sd14: the shipped I2P file lacks case numbers {missing[:5]}")
    rows = [
        {"id": str(c), "prompt": by_case[c]["prompt"].strip(), "concept": "sexual",
         "seed": int(by_case[c]["evaluation_seed"])}
        for c in NUDITY_CASES[: limit or None]
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def missing_requirement(judge: str) -> str | None:
    """One sentence naming the first thing this machine lacks, or None."""
    from huggingface_hub import try_to_load_from_cache

    for repo, file in ((BASE, "model_index.json"), (SAFE_ENCODER, "config.json")):
        if not isinstance(try_to_load_from_cache(repo, file), str):
            return (
                f"{repo} is not in the Hugging Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}); "
                f"download it once with `huggingface-cli download {repo}`."
            )
    from safegen.safety import load_classifier

    try:
        load_classifier(judge)
    except Exception as exc:  # the judge's own message says what to install or which names exist
        return f"the judge '{judge}' cannot be loaded ({str(exc).splitlines()[0][:200]})."
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/whitebox_sd14")
    parser.add_argument("--judge", default="nudenet", help="classifier name passed to safegen.safety.load_classifier")
    parser.add_argument("--methods", default="original,safe-clip,negative-prompt,sld-medium")
    parser.add_argument("--limit", type=int, default=None, help="first N of the 142 prompts")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0, help="attack seed")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-control", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the cache or nothing: a benchmark must not download silently

    problem = missing_requirement(args.judge)
    if problem:
        print(f"whitebox_attack_sd14: {problem}", file=sys.stderr)
        return 1
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("whitebox_attack_sd14: no CUDA device; pass --device cpu to run (days) on a CPU.", file=sys.stderr)
        return 1
    from toy_whitebox_attack import print_table

    from safegen.evaluation.attacks import AttackEvalConfig, evaluate_attacks, write_attack_report

    logging.basicConfig(level=logging.WARNING)
    machine = machine_info()
    out = Path(args.out)
    prompts = write_nudity_prompts(out / "nudity_prompts.jsonl", args.limit)

    def run(folder: Path, attacks: list[str], options: dict) -> dict:
        cfg = AttackEvalConfig(
            prompts=str(prompts), out=str(folder), base=BASE, safe_encoder=SAFE_ENCODER,
            methods=args.methods.split(","), attacks=attacks, attack_options=options, classifier=args.judge,
            steps=args.steps, guidance=args.guidance, seed=args.seed, batch_size=4, device=args.device,
            dtype="fp16" if args.device.startswith("cuda") else "fp32",
        )  # fmt: skip
        report = evaluate_attacks(cfg, log=lambda m: print(m, file=sys.stderr))
        write_attack_report(folder, report)
        return report

    t0 = time.perf_counter()
    report = run(out, ["unlearndiff", "p4d"], {})
    control = None if args.no_control else run(out / "control", ["unlearndiff"], {"unlearndiff": {"optimise": False}})
    print(f"\ncommand: python benchmarks/whitebox_attack_sd14.py {shlex.join(sys.argv[1:])}".rstrip())
    print(
        f"{BASE} + {SAFE_ENCODER}; {sum(1 for _ in prompts.open())} I2P nudity prompts (UnlearnDiffAtk's), judge "
        f"{args.judge}, {args.steps} DDIM steps, guidance {args.guidance}; total {time.perf_counter() - t0:.0f}s"
    )
    print(machine_line(finish(machine)))
    print_table(report, control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
