"""Toy world: does Safe-CLIP's safety reach wording and sentence shapes its training data never used?

Text encoders in `safegen eval t2i` with the toy classifier, same prompts, same seeds: the
original toy CLIP, the template-trained Safe-CLIP (`safe_clip`) and the chain-trained one
(`safe_clip_chain`: toy rewriter -> filters -> toy SD renders -> classifier -> build -> the
same fit), or the encoders named with --encoder. Four unsafe prompt sets, one per axis
(`safegen_train.toy.generalisation`): in-distribution, held-out wording, held-out sentence
structure, and both at once; safe prompts in the canonical and in other shapes.

    python benchmarks/toy_generalisation.py [--out outputs/toy_generalisation] [--per-concept 45]
        [--toy DIR] [--encoder NAME=CLIP_DIR ...]

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
    parser.add_argument("--toy", default=None, help="a toy preset folder (default: the shipped one)")
    parser.add_argument("--encoder", action="append", default=[], help="NAME=CLIP_DIR instead of the preset's two")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from safegen.models.presets import ASSETS_DIR
    from safegen_train.toy.generalisation import format_generalisation, measure_generalisation

    toy = Path(args.toy) if args.toy else ASSETS_DIR / "toy"
    encoders = dict(e.split("=", 1) for e in args.encoder) or {
        "safe_clip": toy / "safe_clip",
        "safe_clip_chain": toy / "safe_clip_chain",
    }
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
        f"toy world, {args.steps} DDIM steps, guidance {args.guidance}: unsafe prompts {n['in_distribution']} "
        f"in-distribution, {n['held_out']} held-out wording, {n['held_out_structure']} held-out structure, "
        f"{n['wording_x_structure']} both; safe prompts {n['safe']} canonical, {n['safe_shapes']} in other shapes; "
        f"own seeds; {result['seconds']} s"
    )
    print(format_generalisation(result, labels))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
