"""safegen: Safe-CLIP encoders injected into Stable Diffusion and LLaVA-style models.

Heavy stacks (torch, diffusers, transformers) are imported only when a name that needs
them is first used, so ``import safegen`` and ``safegen --help`` stay instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "EncoderMismatchError": "safegen.core.errors",
    "MissingWeightsError": "safegen.core.errors",
    "SafeAutoPipelineForImage2Image": "safegen.pipelines.auto",
    "SafeAutoPipelineForInpainting": "safegen.pipelines.auto",
    "SafeAutoPipelineForText2Image": "safegen.pipelines.auto",
    "SafeLlavaCaptioner": "safegen.pipelines.image_to_text",
    "SafeRetriever": "safegen.retrieval.retriever",
    "SafeStableDiffusionControlNetImg2ImgPipeline": "safegen.pipelines.controlnet",
    "SafeStableDiffusionControlNetInpaintPipeline": "safegen.pipelines.controlnet",
    "SafeStableDiffusionControlNetPipeline": "safegen.pipelines.controlnet",
    "SafeStableDiffusionImg2ImgPipeline": "safegen.pipelines.image_to_image",
    "SafeStableDiffusionInpaintPipeline": "safegen.pipelines.inpainting",
    "SafeStableDiffusionPipeline": "safegen.pipelines.text_to_image",
    "SafeStableDiffusionPipelineOutput": "safegen.pipelines.text_to_image",
    "SafeStableDiffusionXLControlNetImg2ImgPipeline": "safegen.pipelines.controlnet",
    "SafeStableDiffusionXLControlNetInpaintPipeline": "safegen.pipelines.controlnet",
    "SafeStableDiffusionXLControlNetPipeline": "safegen.pipelines.controlnet",
    "SafeStableDiffusionXLImg2ImgPipeline": "safegen.pipelines.image_to_image",
    "SafeStableDiffusionXLInpaintPipeline": "safegen.pipelines.inpainting",
    "SafeStableDiffusionXLPipeline": "safegen.pipelines.text_to_image",
    "SafeStableDiffusionXLPipelineOutput": "safegen.pipelines.text_to_image",
    "SafegenError": "safegen.core.errors",
    "copy_tower_weights": "safegen.models.encoders",
    "create_clip_tokenizer": "safegen.models.clip_tokenizer",
    "get_preset": "safegen.models.presets",
    "inject_text_encoder": "safegen.models.encoders",
    "inject_vision_encoder": "safegen.models.encoders",
    "list_presets": "safegen.models.presets",
    "load_classifier": "safegen.safety",
    "load_or_explain": "safegen.core.hub",
    "load_safe_text_encoder": "safegen.models.encoders",
    "load_safe_vision_encoder": "safegen.models.encoders",
    "make_safe": "safegen.pipelines.auto",
    "pipeline_class_for": "safegen.pipelines.auto",
    "safe_pipeline_class": "safegen.pipelines.auto",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'safegen' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
