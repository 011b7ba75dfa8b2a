"""Safe image-to-image, inpainting, ControlNet and any other family, side by side with the original.

    python examples/edit_and_control.py

Each pipeline here is built from tiny components in code, so it runs anywhere in seconds;
with real weights the calls are the same, e.g.

    pipe = SafeAutoPipelineForImage2Image.from_pretrained(
        "CompVis/stable-diffusion-v1-4", safe_encoder="aimagelab/safeclip_vit-l_14")
    safe = safegen.make_safe(controlnet_pipe, safe_encoder="aimagelab/safeclip_vit-l_14")

``make_safe`` leaves the pipeline it is given as it was (the A/B baseline) and shares its
UNet/VAE/ControlNet; encoders no Safe-CLIP covers are listed and named once on stderr.
"""

from __future__ import annotations

import diffusers
import numpy as np
import torch
from PIL import Image

import safegen
from safegen.testing import tiny_clip_model
from safegen.testing.pipelines import tiny_pipeline


def _photo() -> Image.Image:
    return Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))


def _mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))  # white: repaint
    return mask


def main() -> None:
    torch.set_num_threads(1)
    safe_clip = tiny_clip_model(seed=9)  # stands in for "aimagelab/safeclip_vit-l_14"
    cases = [
        ("StableDiffusionImg2ImgPipeline", "sd", {"image": _photo(), "strength": 0.8}),
        ("StableDiffusionInpaintPipeline", "sd-inpaint", {"image": _photo(), "mask_image": _mask()}),
        ("StableDiffusionControlNetPipeline", "sd-controlnet", {"image": _photo()}),
        ("StableDiffusionXLImg2ImgPipeline", "sdxl", {"image": _photo(), "strength": 0.8}),
        ("FluxPipeline", "flux", {"height": 32, "width": 32, "max_sequence_length": 16}),
    ]
    for name, family, inputs in cases:
        original = tiny_pipeline(getattr(diffusers, name), family)
        safe = safegen.make_safe(original, safe_encoder=safe_clip)
        outs = [
            p(
                "a red circle",
                num_inference_steps=2,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
                **inputs,
            )
            for p in (original, safe)
        ]
        change = float(np.abs(outs[0].images - outs[1].images).mean())
        print(
            f"{type(safe).__name__:42s} mean pixel change {change:.4f}; "
            f"uncovered: {', '.join(safe.uncovered_text_encoders) or 'none'}"
        )


if __name__ == "__main__":
    main()
