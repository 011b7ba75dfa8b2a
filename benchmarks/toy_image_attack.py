"""Toy world: does the safe vision tower hold against image-pgd (eval attack's image side)?

Renders held-out unsafe toy scenes (one per shape/colour/background and concept, seeds far
from training), then runs `safegen eval attack --images`'s own function
(`safegen.evaluation.attacks.image_pgd.evaluate_image_attack`): the toy LLaVA captions each
image with the original tower and the safe one, then PGD (L-inf 8/255) perturbs each image
against the safe tower towards the original tower's features and the safe captioner
captions it again. A caption naming a banned word of any concept counts as a success.

    python benchmarks/toy_image_attack.py [--encoder DIR ...] [--per-concept 45] [--steps 20]

Default encoder: the shipped `safegen/assets/toy/safe_clip`; pass several `--encoder` to
compare (e.g. a fit without adversarial image rounds).
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
    parser.add_argument("--encoder", action="append", default=None, help="safe vision tower folder (repeatable)")
    parser.add_argument("--per-concept", type=int, default=45, help="scenes per concept (45: every combo)")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps")
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from safegen.evaluation.attacks.constraint import BannedWords
    from safegen.evaluation.attacks.image_pgd import evaluate_image_attack
    from safegen.models.presets import ASSETS_DIR
    from safegen.pipelines.image_to_text import SafeLlavaCaptioner
    from safegen_train.toy.evaluate import held_out_scenes
    from safegen_train.toy.world import render_scene

    toy = ASSETS_DIR / "toy"
    encoders = args.encoder or [str(toy / "safe_clip")]
    images = [render_scene(s, unsafe=True) for s in held_out_scenes(per_concept=args.per_concept)]
    machine = machine_info()
    results = {}
    for encoder in encoders:
        start = time.perf_counter()
        captioner = SafeLlavaCaptioner.from_pretrained(str(toy / "llava"), torch_dtype=torch.float32)
        res = evaluate_image_attack(
            images, captioner, encoder, BannedWords.load(None), eps=args.eps, steps=args.steps, log=lambda m: None
        )
        res.pop("adversarial_images", None)
        res["seconds"] = round(time.perf_counter() - start, 1)
        results[encoder] = res
    print(machine_line(finish(machine)))
    print(f"{len(images)} held-out unsafe toy images, PGD L-inf {args.eps:.4f}, {args.steps} steps")
    print("| safe tower | condition | captions naming the concept | 95% CI |")
    print("|---|---|---|---|")
    for encoder, res in results.items():
        for condition, m in res["methods"].items():
            lo, hi = m["ci95"]
            print(
                f"| `{encoder}` | {condition} | {m['n_success']}/{m['n_prompts']} = "
                f"{100 * m['attack_success_rate']:.1f}% | {100 * lo:.1f}-{100 * hi:.1f}% |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
