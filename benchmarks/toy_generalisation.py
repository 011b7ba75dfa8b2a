"""Toy world: does Safe-CLIP's safety reach wording its training data never used? And does the paper's chain work?

Three text encoders in `safegen eval t2i` with the toy classifier, same prompts, same seeds:
the original toy CLIP, the shipped template-trained Safe-CLIP (`safegen/assets/toy/safe_clip`)
and the chain-trained one (`safegen/assets/toy/safe_clip_chain`: toy rewriter -> filters ->
toy SD renders -> classifier -> build -> the same fit). Two unsafe prompt sets: in-distribution
wording (the phrasings every Safe-CLIP training set uses) and held-out wording
(`safegen_train.toy.world.HELDOUT_PHRASES`, seen only in the original models' pretraining).

    python benchmarks/toy_generalisation.py [--out outputs/toy_generalisation] [--per-concept 45]

Resumable: images are bound to their prompt, seed, settings and weights, so a re-run reuses them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import finish, machine_info, machine_line  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/toy_generalisation")
    parser.add_argument("--per-concept", type=int, default=45, help="combos per concept (45: all)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from safegen.presets import ASSETS_DIR
    from safegen_train.toy.generalisation import format_generalisation, measure_generalisation

    toy = ASSETS_DIR / "toy"
    encoders = {"safe_clip": toy / "safe_clip", "safe_clip_chain": toy / "safe_clip_chain"}
    start = time.perf_counter()
    header = machine_info()
    result = measure_generalisation(
        args.out,
        base=toy / "sd",
        safe_encoders=encoders,
        clip=toy / "clip",
        per_concept=args.per_concept,
        steps=args.steps,
        guidance=args.guidance,
        log=lambda *a: None,
    )
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["machine"] = finish(header)
    labels = {
        "original": "original",
        "safe_clip": "Safe-CLIP, template-trained (shipped `safe_clip`)",
        "safe_clip_chain": "Safe-CLIP, chain-trained (`safe_clip_chain`)",
    }
    n = result["prompts"]
    print(machine_line(header))
    print(
        f"toy world, {args.steps} DDIM steps, guidance {args.guidance}: {n['in_distribution']} in-distribution and "
        f"{n['held_out']} held-out unsafe prompts, {n['safe']} safe prompts, own seeds; {result['seconds']} s"
    )
    print(format_generalisation(result, labels))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
