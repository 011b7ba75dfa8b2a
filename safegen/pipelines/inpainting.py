"""Inpainting with a Safe-CLIP text encoder: SD 1.x/2.x and SDXL.

Inpainting repaints a masked region of a real photo from a prompt; the prompt is read
through the safe encoder, every diffusers argument (``image``, ``mask_image``,
``strength``, ...) unchanged.
"""

from __future__ import annotations

from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

from safegen.pipelines.safe_pipeline import SafePipelineMixin


class SafeStableDiffusionInpaintPipeline(SafePipelineMixin, StableDiffusionInpaintPipeline):
    """``StableDiffusionInpaintPipeline`` with a Safe-CLIP text encoder.

    >>> pipe = SafeStableDiffusionInpaintPipeline.from_pretrained(
    ...     "stable-diffusion-v1-5/stable-diffusion-inpainting", safe_encoder="aimagelab/safeclip_vit-l_14")
    >>> pipe("a red sofa", image=photo, mask_image=mask).images[0]
    """


class SafeStableDiffusionXLInpaintPipeline(SafePipelineMixin, StableDiffusionXLInpaintPipeline):
    """``StableDiffusionXLInpaintPipeline`` with Safe-CLIP text encoders (bigG slot reported as uncovered)."""
