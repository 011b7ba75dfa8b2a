"""Token-by-token: how far each encoder's states for unsafe prompts sit from the original's safe twins.

    python benchmarks/toy_token_drift.py [--encoder NAME=CLIP_DIR ...] [--per-concept 9]

Default: the shipped toy preset's original CLIP and both Safe-CLIPs. Prints the table of
:func:`safegen_train.toy.token_drift.token_drift` (mean 1 - cos per segment: before the
phrase, the phrase, after it, padding) for the canonical shape, two training shapes and every
held-out shape. No images are generated: it takes seconds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOY = Path(__file__).resolve().parents[1] / "safegen" / "assets" / "toy"


def main() -> None:
    from safegen_train.toy.token_drift import format_token_drift, token_drift

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", default=str(TOY / "clip"), help="the original toy CLIP (the safe twins' states)")
    p.add_argument("--encoder", action="append", default=[], help="NAME=CLIP_DIR (repeatable)")
    p.add_argument("--per-concept", type=int, default=9)
    args = p.parse_args()
    encoders = dict(e.split("=", 1) for e in args.encoder) or {
        "original": str(TOY / "clip"),
        "safe-clip": str(TOY / "safe_clip"),
        "safe-clip (chain)": str(TOY / "safe_clip_chain"),
    }
    print(format_token_drift(token_drift(encoders, args.original, per_concept=args.per_concept)))


if __name__ == "__main__":
    main()
