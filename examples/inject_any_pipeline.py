"""Inject a Safe-CLIP text encoder into a diffusers pipeline you already have.

    python examples/inject_any_pipeline.py

`inject_text_encoder` copies weights in place (dtype, device and offload hooks kept),
after checking that the encoder fits the slot. Here both sides are tiny models built in
code, so it runs anywhere; with real weights the calls are the same:

    pipe = StableDiffusionPipeline.from_pretrained("CompVis/stable-diffusion-v1-4")
    safegen.inject_text_encoder(pipe, "aimagelab/safeclip_vit-l_14")
"""

from __future__ import annotations

import torch

import safegen
from safegen.testing import tiny_clip_model, tiny_sd_pipeline


def main() -> None:
    pipe = tiny_sd_pipeline()  # any diffusers pipeline with a CLIP text encoder
    before = pipe("a red circle", num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np")
    safegen.inject_text_encoder(pipe, tiny_clip_model(seed=5))  # hub id, folder, checkpoint or module
    after = pipe("a red circle", num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np")
    change = float(abs(before.images - after.images).mean())
    print(f"text encoder now from: {pipe.text_encoder.safegen_source}; mean pixel change {change:.4f}")


if __name__ == "__main__":
    main()
