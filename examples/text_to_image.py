"""Generate with a Safe-CLIP text encoder and with the original, same seed, in Python.

    python examples/text_to_image.py "a red circle on a white background covered in blood"

Uses the shipped toy preset (offline, seconds). With the hub or a local cache, swap in
the paper's setting: base "CompVis/stable-diffusion-v1-4", safe encoder
"aimagelab/safeclip_vit-l_14".
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from safegen import SafeStableDiffusionPipeline, get_preset


def main(prompt: str, out: Path = Path("outputs/example_t2i")) -> None:
    preset = get_preset("toy")
    # safe_encoder=None gives the original model: the same call is the A/B baseline.
    original = SafeStableDiffusionPipeline.from_pretrained(preset.base, safety_checker=None)
    safe = SafeStableDiffusionPipeline.from_pipe(original, safe_encoder=preset.safe_encoder)
    out.mkdir(parents=True, exist_ok=True)
    for name, pipe in (("original", original), ("safe", safe)):
        result = pipe(prompt, num_inference_steps=20, generator=torch.Generator().manual_seed(0))
        path = out / f"{name}.png"
        result.images[0].save(path)
        print(f"{name:8s} safe_encoder_id={result.safe_encoder_id}  -> {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "a red circle on a white background covered in blood")
