"""Stable Diffusion pipelines whose CLIP text encoder is a Safe-CLIP encoder.

The classes subclass diffusers' own pipelines, so every call argument, scheduler,
LoRA loader and offloading helper works unchanged; only the text encoder's weights
differ. ``safe_encoder=None`` gives the original model, so the same code is the A/B
baseline. Saved folders are plain diffusers pipelines (``model_index.json`` names the
diffusers class) with a ``safegen.json`` beside them recording which safe encoder is
baked in.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from .._hub import load_or_explain
from ..encoders import inject_text_encoder, source_id
from ..errors import SafegenError

_logger = logging.getLogger(__name__)

SAFEGEN_CONFIG = "safegen.json"


@dataclass
class SafeStableDiffusionPipelineOutput(StableDiffusionPipelineOutput):
    """diffusers' output plus the id of the safe encoder that produced it.

    Args:
        images: the generated images (PIL list or array, per ``output_type``).
        nsfw_content_detected: diffusers' safety-checker flags (None when no checker ran).
        safe_encoder_id: the Safe-CLIP encoder used, None for the original model.
    """

    safe_encoder_id: str | None = None


class _SafeEncoderMixin:
    """Shared behaviour of the safe pipelines: load/inject, from_pipe, save, output."""

    _diffusers_class: type = StableDiffusionPipeline
    # Keyword -> text-encoder slot that keyword's encoder replaces.
    _encoder_args = {"safe_encoder": "text_encoder"}

    @property
    def safe_encoder_id(self) -> str | None:
        ids = getattr(self, "_safe_encoder_ids", {})
        return ids.get("text_encoder") or next(iter(ids.values()), None)

    @property
    def safe_encoder_ids(self) -> dict[str, str]:
        """Which safe encoder replaced which text-encoder slot."""
        return dict(getattr(self, "_safe_encoder_ids", {}))

    def _apply_safe_encoders(self, encoders: dict[str, Any], load_kwargs: dict | None) -> None:
        ids = dict(getattr(self, "_safe_encoder_ids", {}))
        for arg, slot in self._encoder_args.items():
            enc = encoders.get(arg)
            if enc is None:
                continue
            inject_text_encoder(self, enc, slot=slot, **(load_kwargs or {}))
            ids[slot] = source_id(enc)
        # Plain attribute: not a diffusers component, never written to model_index.json.
        object.__setattr__(self, "_safe_encoder_ids", ids)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        safe_encoder: Any = None,
        safe_encoder_kwargs: dict | None = None,
        **kwargs: Any,
    ):
        """Load a diffusers pipeline and swap in a Safe-CLIP text encoder.

        Args:
            pretrained_model_name_or_path: hub id or folder of the base pipeline.
            safe_encoder: hub id, folder, open_clip checkpoint, LoRA adapter folder or loaded
                module (see :mod:`safegen.encoders`); None keeps the original encoder.
            safe_encoder_kwargs: passed to the encoder loader (e.g. ``base`` for a LoRA).
            **kwargs: every diffusers ``from_pretrained`` argument (torch_dtype, variant, ...).
        """
        encoders = {arg: kwargs.pop(arg, None) for arg in cls._encoder_args if arg != "safe_encoder"}
        encoders["safe_encoder"] = safe_encoder
        src = str(pretrained_model_name_or_path)
        pipe = load_or_explain(src, lambda: super(_SafeEncoderMixin, cls).from_pretrained(src, **kwargs))
        saved = Path(src).expanduser() / SAFEGEN_CONFIG
        if saved.is_file():
            # Weights are already baked in; remember where they came from.
            object.__setattr__(pipe, "_safe_encoder_ids", json.loads(saved.read_text()).get("safe_encoder_ids", {}))
        pipe._apply_safe_encoders(encoders, safe_encoder_kwargs)
        return pipe

    @classmethod
    def from_pipe(cls, pipeline: Any, *, safe_encoder: Any = None, safe_encoder_kwargs: dict | None = None, **kwargs):
        """Build a safe pipeline sharing ``pipeline``'s UNet, VAE and scheduler.

        The text encoders that receive a safe encoder are copied first, so ``pipeline``
        itself stays the original: both can run side by side (A/B with one set of weights
        in memory for everything else).
        """
        encoders = {arg: kwargs.pop(arg, None) for arg in cls._encoder_args if arg != "safe_encoder"}
        encoders["safe_encoder"] = safe_encoder
        for arg, slot in cls._encoder_args.items():
            if encoders.get(arg) is not None and slot not in kwargs:
                kwargs[slot] = copy.deepcopy(getattr(pipeline, slot))
        new = super().from_pipe(pipeline, **kwargs)
        object.__setattr__(new, "_safe_encoder_ids", dict(getattr(pipeline, "_safe_encoder_ids", {})))
        new._apply_safe_encoders(encoders, safe_encoder_kwargs)
        return new

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """Save as a plain diffusers pipeline folder (readable without safegen) plus safegen.json."""
        super().save_pretrained(save_directory, **kwargs)
        index_path = Path(save_directory) / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = self._diffusers_class.__name__
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        meta = {"safe_encoder_ids": self.safe_encoder_ids, "safegen_class": type(self).__name__}
        (Path(save_directory) / SAFEGEN_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")

    def __call__(self, *args: Any, **kwargs: Any):
        out = super().__call__(*args, **kwargs)
        if not kwargs.get("return_dict", True):
            return out
        return SafeStableDiffusionPipelineOutput(
            images=out.images,
            nsfw_content_detected=getattr(out, "nsfw_content_detected", None),
            safe_encoder_id=self.safe_encoder_id,
        )


class SafeStableDiffusionPipeline(_SafeEncoderMixin, StableDiffusionPipeline):
    """Stable Diffusion 1.x/2.x with a Safe-CLIP text encoder.

    >>> pipe = SafeStableDiffusionPipeline.from_pretrained(
    ...     "CompVis/stable-diffusion-v1-4", safe_encoder="aimagelab/safeclip_vit-l_14")
    >>> out = pipe("a photo of ...", num_inference_steps=30)
    >>> out.images, out.nsfw_content_detected, out.safe_encoder_id
    """

    _diffusers_class = StableDiffusionPipeline


class SafeStableDiffusionXLPipeline(_SafeEncoderMixin, StableDiffusionXLPipeline):
    """SDXL with Safe-CLIP text encoders.

    SDXL reads two text encoders: ``text_encoder`` (CLIP ViT-L/14, covered by the released
    ``aimagelab/safeclip_vit-l_14``) and ``text_encoder_2`` (OpenCLIP ViT-bigG/14, for which
    no Safe-CLIP is released). ``safe_encoder`` replaces the first, ``safe_encoder_2`` the
    second; an encoder passed for the wrong slot is refused by the shape check.
    """

    _diffusers_class = StableDiffusionXLPipeline
    _encoder_args = {"safe_encoder": "text_encoder", "safe_encoder_2": "text_encoder_2"}

    @property
    def uncovered_text_encoders(self) -> list[str]:
        """Text-encoder slots still holding original (unsafe) weights."""
        return [s for s in ("text_encoder", "text_encoder_2") if s not in self.safe_encoder_ids]


def pipeline_class_for(pipe_or_source: Any) -> type:
    """The safe class matching a diffusers pipeline object, saved folder or hub id."""
    if isinstance(pipe_or_source, (str, Path)):
        from diffusers import DiffusionPipeline

        src = str(pipe_or_source)
        index = load_or_explain(src, lambda: DiffusionPipeline.load_config(src))
        name = index.get("_class_name", "")
    else:
        name = type(pipe_or_source).__name__
    if "XL" in name and "Img2Img" not in name and "Inpaint" not in name:
        return SafeStableDiffusionXLPipeline
    if name in ("StableDiffusionPipeline", "SafeStableDiffusionPipeline"):
        return SafeStableDiffusionPipeline
    raise SafegenError(
        f"no safe pipeline for a '{name}': safegen's pipelines cover StableDiffusionPipeline and "
        "StableDiffusionXLPipeline; for others use safegen.inject_text_encoder(pipe, encoder)"
    )
