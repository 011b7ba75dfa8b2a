"""The toy world's three tables: retrieval, text-to-image, image-to-text, original vs Safe-CLIP.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/toy_world.py`` (shipped toy weights), or point
``--safe-clip`` at another Safe-CLIP folder (e.g. the paper-losses-only ablation) and
``--assets`` at a rebuilt toy folder. Held-out scenes: one per (shape, colour,
background, concept) = 135 unsafe scenes and 45 safe ones, seeds far from training.
Everything printed is measured in this run; ``--json`` also writes the figures to a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

_logger = logging.getLogger(__name__)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also when imported from elsewhere


def _row(name: str, values: dict[str, float], keys: list[str]) -> str:
    return f"| {name:<9} | " + " | ".join(f"{values[k]:6.1f}" for k in keys) + " |"


def _table(title: str, table: dict, keys: list[str], headers: list[str]) -> str:
    lines = [f"\n{title}", "| encoder   | " + " | ".join(headers) + " |", "|" + "---|" * (len(keys) + 1)]
    for name in ("original", "safe"):
        lines.append(_row(name, table[name], keys))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure and print the tables."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from safegen_train.toy.evaluate import (
        DEFAULT_ASSETS,
        classifier_table,
        held_out_scenes,
        i2t_table,
        retrieval_table,
        t2i_table,
    )

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--assets", default=str(DEFAULT_ASSETS), help="toy folder with clip, safe_clip, sd, llava, classifier"
    )
    p.add_argument("--safe-clip", default=None, help="Safe-CLIP folder to evaluate (default ASSETS/safe_clip)")
    p.add_argument("--per-concept", type=int, default=None, help="held-out combos per concept (default all 45)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps for text-to-image")
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma list of tables to skip: retrieval,t2i,i2t,classifier")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    assets = Path(args.assets)
    safe_dir = Path(args.safe_clip) if args.safe_clip else assets / "safe_clip"
    skip = set(filter(None, args.skip.split(",")))
    scenes = held_out_scenes(args.per_concept)
    n_safe = len({(s.shape, s.colour, s.background) for s in scenes})
    print(f"toy world benchmark: {len(scenes)} unsafe + {n_safe} safe held-out scenes; safe encoder {safe_dir}")
    from _bench import finish, machine_info, machine_line

    machine = machine_info()
    results: dict = {"safe_clip": str(safe_dir), "n_unsafe": len(scenes), "n_safe": n_safe}

    if "classifier" not in skip:
        t0 = time.time()
        results["classifier"] = classifier_table(assets / "classifier", scenes)
        c = results["classifier"]
        print(
            f"\nToy classifier on held-out renders ({int(c['n_images'])} images): overlay {c['concept_acc']:.1f}%, "
            f"shape {c['shape_acc']:.1f}%, colour {c['colour_acc']:.1f}%, background {c['background_acc']:.1f}% "
            f"({time.time() - t0:.0f}s)"
        )
    if "retrieval" not in skip:
        t0 = time.time()
        r = results["retrieval"] = retrieval_table(assets / "clip", safe_dir, scenes)
        print(
            _table(
                f"Retrieval (galleries embedded by the original encoders; {time.time() - t0:.0f}s)",
                r,
                ["t2i_unsafe_top1_pct", "t2i_safe_r1", "i2t_unsafe_top1_pct", "i2t_safe_r1"],
                [
                    "unsafe text -> top-1 unsafe image %",
                    "safe T->I R@1",
                    "unsafe image -> top-1 unsafe text %",
                    "safe I->T R@1",
                ],
            )
        )
    if "t2i" not in skip:
        t0 = time.time()
        r = results["t2i"] = t2i_table(
            assets / "sd",
            safe_dir,
            scenes,
            classifier_dir=assets / "classifier",
            steps=args.steps,
            guidance=args.guidance,
            seed=args.seed,
        )
        print(
            _table(
                f"Text-to-image (DDIM {args.steps} steps, guidance {args.guidance}, seeds {args.seed}+i, "
                f"toy classifier; {time.time() - t0:.0f}s)",
                r,
                ["unsafe_overlay_pct", "safe_overlay_pct", "safe_shape_acc", "safe_colour_acc", "safe_background_acc"],
                [
                    "unsafe prompts: overlay %",
                    "safe prompts: overlay %",
                    "safe shape acc",
                    "safe colour acc",
                    "safe background acc",
                ],
            )
        )
    if "i2t" not in skip:
        t0 = time.time()
        r = results["i2t"] = i2t_table(assets / "llava", safe_dir, scenes)
        print(
            _table(
                f"Image-to-text (greedy, 'Describe this image.'; {time.time() - t0:.0f}s)",
                r,
                ["unsafe_mention_pct", "unsafe_attr_acc", "safe_exact_match", "safe_attr_acc", "safe_mention_pct"],
                [
                    "unsafe images: names unsafe %",
                    "unsafe images: shape+colour",
                    "safe exact match",
                    "safe shape+colour",
                    "safe images: names unsafe %",
                ],
            )
        )
        for name in ("original", "safe"):
            print(f"  {name} examples: {r[name + '_examples']}")
    # Seconds per table above are single runs, tables one after another (not the interleaved method).
    results["machine"] = finish(machine)
    print("\n" + machine_line(machine))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
