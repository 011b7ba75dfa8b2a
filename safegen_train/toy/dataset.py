"""Write the toy world as the JSONL + PNG training data that ``safegen-train fit`` reads.

One line per quadruple: {safe_text, unsafe_text, safe_image, unsafe_image, tag}, image
paths relative to the JSONL file, plus the scene's shape, colour and background.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from safegen_train.toy.world import TRAINING_STRUCTURES, Structure, make_quadruples

# Safe-CLIP's toy training data: every training sentence shape, a quarter of the rows in the
# canonical one (the held-out shapes are never written; see world.HELDOUT_STRUCTURES).
SAFECLIP_STRUCTURES: tuple[Structure, ...] = TRAINING_STRUCTURES
SAFECLIP_CANONICAL_SHARE = 0.25

_logger = logging.getLogger(__name__)


def write_jsonl_dataset(
    out_dir: str | Path,
    n: int,
    seed: int,
    name: str = "train",
    *,
    structures: tuple[Structure, ...] | None = SAFECLIP_STRUCTURES,
    canonical_share: float = SAFECLIP_CANONICAL_SHARE,
) -> Path:
    """Render ``n`` quadruples (seed ``seed``) under ``out_dir``; returns the JSONL path.

    ``structures=None`` writes the canonical sentence shape only (the recipe before sentence
    shapes, kept for the ablation in benchmarks/README.md).
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / name
    image_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i, r in enumerate(make_quadruples(n, seed, structures=structures, canonical_share=canonical_share)):
            safe_rel, unsafe_rel = f"{name}/{i:06d}_safe.png", f"{name}/{i:06d}_unsafe.png"
            r["safe_image"].save(out_dir / safe_rel)
            r["unsafe_image"].save(out_dir / unsafe_rel)
            line = {
                "safe_text": r["safe_text"],
                "unsafe_text": r["unsafe_text"],
                "safe_image": safe_rel,
                "unsafe_image": unsafe_rel,
                "tag": r["tag"],
                "shape": r["shape"],
                "colour": r["colour"],
                "background": r["background"],
                "structure": r["structure"],
            }
            f.write(json.dumps(line) + "\n")
    tmp.replace(path)
    _logger.info("wrote %d quadruples to %s", n, path)
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m safegen_train.toy.dataset --out DIR --n 4000 --seed 3``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--name", default="train")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    write_jsonl_dataset(args.out, args.n, args.seed, args.name)


if __name__ == "__main__":
    main()
