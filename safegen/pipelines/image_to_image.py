"""Image-to-image with a Safe-CLIP text encoder: SD 1.x/2.x and SDXL.

Editing a real photo towards an unsafe prompt is the commonest misuse of diffusion models;
these classes read the prompt through the safe encoder exactly as the text-to-image ones
do, with every diffusers argument (``image``, ``strength``, ...) unchanged.
"""

from __future__ import annotations

from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

from safegen.pipelines.safe_pipeline import SafePipelineMixin


class SafeStableDiffusionImg2ImgPipeline(SafePipelineMixin, StableDiffusionImg2ImgPipeline):
    """``StableDiffusionImg2ImgPipeline`` with a Safe-CLIP text encoder.

    >>> pipe = SafeStableDiffusionImg2ImgPipeline.from_pretrained(
    ...     "CompVis/stable-diffusion-v1-4", safe_encoder="aimagelab/safeclip_vit-l_14")
    >>> pipe("a watercolour of ...", image=photo, strength=0.6).images[0]
    """


class SafeStableDiffusionXLImg2ImgPipeline(SafePipelineMixin, StableDiffusionXLImg2ImgPipeline):
    """``StableDiffusionXLImg2ImgPipeline`` with Safe-CLIP text encoders.

    ``safe_encoder`` covers ``text_encoder`` (CLIP ViT-L/14); ``text_encoder_2`` (OpenCLIP
    bigG) stays original unless ``safe_encoder_2`` is given, and is reported as uncovered.
    The SDXL refiner has only ``text_encoder_2``.
    """
