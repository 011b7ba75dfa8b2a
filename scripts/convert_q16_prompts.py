"""Convert Q16's pickled class embeddings (``data/ViT-L-14/prompts.p``) to the safetensors file safegen ships.

The pickle is parsed opcode by opcode (:mod:`safegen.safety.pickled_array`), never
unpickled. The output keeps the upstream float16 values unchanged in a ``prompts`` tensor
of shape (2, 768) (row 0 "not inappropriate", row 1 "inappropriate"), and its metadata
names the source file, commit and the sha256 of the upstream bytes, so a test can prove
the shipped tensor equals the upstream file.

Usage::

    git -C Q16 show cdf928f4f3cf522e9459e10d706991d27c5d2824:data/ViT-L-14/prompts.p > prompts.p
    python scripts/convert_q16_prompts.py prompts.p safegen/assets/q16/vit-l-14-prompts.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from safegen.safety.pickled_array import read_pickled_float_array

SOURCE = "https://github.com/ml-research/Q16/blob/main/data/ViT-L-14/prompts.p"
# The last commit that changed the file (git log -1 -- data/ViT-L-14/prompts.p).
SOURCE_COMMIT = "cdf928f4f3cf522e9459e10d706991d27c5d2824"


def convert(src: Path, dst: Path) -> dict[str, str]:
    import torch
    from safetensors.torch import save_file

    data = src.read_bytes()
    array = read_pickled_float_array(data)  # (2, 768) float16
    if array.ndim != 2 or array.shape[0] != 2:
        raise SystemExit(f"{src}: expected a (2, D) array, got {array.shape}")
    metadata = {
        "source": SOURCE,
        "source_commit": SOURCE_COMMIT,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "rows": "0: not inappropriate, 1: inappropriate",
        "clip": "openai/clip-vit-large-patch14",
        "licence": "MIT (Q16, Schramowski et al., FAccT 2022)",
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({"prompts": torch.from_numpy(array.copy()).contiguous()}, str(dst), metadata=metadata)
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="Q16's prompts.p")
    parser.add_argument("dst", type=Path, help="the .safetensors file to write")
    args = parser.parse_args()
    meta = convert(args.src, args.dst)
    print(f"wrote {args.dst} (upstream sha256 {meta['source_sha256']})")


if __name__ == "__main__":
    main()
