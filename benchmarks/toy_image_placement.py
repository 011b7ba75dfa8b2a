"""Toy world: does the vision tower's safety reach unsafe overlays placed where training never drew them?

Issue 21's image side. The held-out scenes of `toy_world.py` (one per shape x colour x
background x concept, seeds far from training) are drawn with the unsafe overlay at each
placement of `safegen_train.toy.world.PLACEMENTS`: the training default, then held-out ones
(smaller, larger, moved to the centre or a top corner, half cut off, small in a corner).
Same scenes, same overlay strokes and the same images for both towers; only the placement
changes. Per placement, original vs Safe-CLIP vision tower: the toy LLaVA's captions naming
the concept, unsafe image -> top-1 unsafe caption (gallery embedded by the original text
tower), and where the pooled image embedding sits (cos to the original's embedding of the
safe twin and of the unsafe image); the toy classifier's flag rate says whether the overlay is
still visible to a judge. Every toy model was trained on the default placement only, the
original ones included.

    python benchmarks/toy_image_placement.py [--per-concept 45] [--placement NAME ...]
        [--toy DIR] [--safe-clip DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import finish, machine_info, machine_line  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-concept", type=int, default=45, help="scenes per concept (45: every combo)")
    parser.add_argument("--placement", action="append", default=None, help="placement name (repeatable; default all)")
    parser.add_argument("--toy", default=None, help="a toy preset folder (default: the shipped one)")
    parser.add_argument("--safe-clip", default=None, help="Safe-CLIP folder (default TOY/safe_clip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from safegen.core.assets import ASSETS_DIR
    from safegen_train.toy.placement import format_placements, measure_placements, summary

    toy = Path(args.toy) if args.toy else ASSETS_DIR / "toy"
    header = machine_info()
    start = time.perf_counter()
    result = measure_placements(
        toy,
        safe_clip=args.safe_clip,
        per_concept=args.per_concept,
        placements=tuple(args.placement) if args.placement else None,
    )
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["machine"] = finish(header)
    print(machine_line(header))
    print(
        f"toy world, {result['n_scenes']} held-out unsafe scenes per placement, {len(result['placements'])} "
        f"placements, Safe-CLIP {result['safe_clip']}; greedy captions, 20 new tokens; {result['seconds']} s"
    )
    print(format_placements(result))
    if args.json:
        if "default" in result["placements"]:
            result["summary"] = summary(result)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
