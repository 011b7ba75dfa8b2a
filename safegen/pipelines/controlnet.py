"""ControlNet pipelines with a Safe-CLIP text encoder: SD 1.x/2.x and SDXL, text/image/inpaint.

The ControlNet steers layout (edges, pose, depth); the prompt still chooses the content,
and it is read through the safe encoder. ``controlnet=`` and every other diffusers
argument pass through unchanged.
"""

from __future__ import annotations

from diffusers import (
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
)

from safegen.pipelines.safe_pipeline import SafePipelineMixin


class SafeStableDiffusionControlNetPipeline(SafePipelineMixin, StableDiffusionControlNetPipeline):
    """``StableDiffusionControlNetPipeline`` with a Safe-CLIP text encoder.

    >>> cn = ControlNetModel.from_pretrained("lllyasviel/sd-controlnet-canny")
    >>> pipe = SafeStableDiffusionControlNetPipeline.from_pretrained(
    ...     "CompVis/stable-diffusion-v1-4", controlnet=cn, safe_encoder="aimagelab/safeclip_vit-l_14")
    >>> pipe("a portrait", image=edges).images[0]
    """


class SafeStableDiffusionControlNetImg2ImgPipeline(SafePipelineMixin, StableDiffusionControlNetImg2ImgPipeline):
    """``StableDiffusionControlNetImg2ImgPipeline`` with a Safe-CLIP text encoder."""


class SafeStableDiffusionControlNetInpaintPipeline(SafePipelineMixin, StableDiffusionControlNetInpaintPipeline):
    """``StableDiffusionControlNetInpaintPipeline`` with a Safe-CLIP text encoder."""


class SafeStableDiffusionXLControlNetPipeline(SafePipelineMixin, StableDiffusionXLControlNetPipeline):
    """``StableDiffusionXLControlNetPipeline`` with Safe-CLIP text encoders (bigG slot reported as uncovered)."""


class SafeStableDiffusionXLControlNetImg2ImgPipeline(SafePipelineMixin, StableDiffusionXLControlNetImg2ImgPipeline):
    """``StableDiffusionXLControlNetImg2ImgPipeline`` with Safe-CLIP text encoders."""


class SafeStableDiffusionXLControlNetInpaintPipeline(SafePipelineMixin, StableDiffusionXLControlNetInpaintPipeline):
    """``StableDiffusionXLControlNetInpaintPipeline`` with Safe-CLIP text encoders."""
