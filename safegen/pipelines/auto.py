"""One entry for every pipeline family: the safe class for a pipeline, a task, or a saved folder.

- :func:`make_safe` gives a safe twin of any loaded diffusers pipeline with CLIP text encoders.
- :func:`pipeline_class_for` names the safe class for a pipeline object, saved folder or hub id,
  optionally switched to another task (``"text2image"``, ``"image2image"``, ``"inpaint"``)
  the way diffusers' AutoPipelines switch (SD text-to-image -> SD img2img, ...).
- ``SafeAutoPipelineForText2Image`` / ``...Image2Image`` / ``...Inpainting`` load by task, like
  diffusers' ``AutoPipelineFor*``, and take ``safe_encoder=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers
from diffusers import DiffusionPipeline
from diffusers.pipelines.auto_pipeline import (
    AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
    AUTO_INPAINT_PIPELINES_MAPPING,
    AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
)

from safegen.core.errors import SafegenError
from safegen.core.hub import load_or_explain, missing_hub_weights

# The family modules are imported for their side effect: each registers its named classes (with
# their docstrings) for its diffusers parents, so they win over the ones safe_pipeline_class generates.
from safegen.pipelines import controlnet as _controlnet  # noqa: F401
from safegen.pipelines import image_to_image as _image_to_image  # noqa: F401
from safegen.pipelines import inpainting as _inpainting  # noqa: F401
from safegen.pipelines import safe_pipeline as _safe
from safegen.pipelines import text_to_image as _text_to_image  # noqa: F401

TASKS = ("text2image", "image2image", "inpaint")


def safe_pipeline_class(pipeline_cls: type) -> type:
    """The safe subclass of any diffusers pipeline class with ``text_encoder*`` components."""
    return _safe.safe_pipeline_class(pipeline_cls)


def make_safe(pipe: Any, safe_encoder: Any = None, *, safe_encoder_kwargs: dict | None = None, **kwargs: Any) -> Any:
    """A safe twin of ``pipe`` sharing its components; ``pipe`` stays the original.

    Works for any diffusers pipeline whose text encoders include a CLIP: SD 1.x/2.x, SDXL,
    their img2img/inpaint/ControlNet variants, SD3 and FLUX (whose CLIP-L slot is covered and
    whose other encoders are listed in ``uncovered_text_encoders``). ``safe_encoder_2=`` covers
    a second CLIP encoder. Other keyword arguments go to diffusers' ``from_pipe``.

    >>> safe = safegen.make_safe(pipe, safe_encoder="aimagelab/safeclip_vit-l_14")
    >>> safe.uncovered_text_encoders      # e.g. ['text_encoder_2'] for SDXL
    """
    return safe_pipeline_class(type(pipe)).from_pipe(
        pipe, safe_encoder=safe_encoder, safe_encoder_kwargs=safe_encoder_kwargs, **kwargs
    )


def diffusers_class_named(name: str) -> type:
    """The diffusers pipeline class a ``model_index.json`` names (a ``Safe`` prefix is ignored)."""
    for candidate in (name, name[4:] if name.startswith("Safe") else None):
        cls = getattr(diffusers, candidate, None) if candidate else None
        if isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline):
            return cls
    raise SafegenError(f"'{name}' is not a diffusers pipeline class this diffusers knows (model_index.json)")


def task_class(pipeline_cls: type, task: str, *, controlnet: bool = False) -> type:
    """The diffusers class for ``task`` in ``pipeline_cls``'s family (SD -> SD img2img, ...)."""
    mappings = {
        "text2image": AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
        "image2image": AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        "inpaint": AUTO_INPAINT_PIPELINES_MAPPING,
    }
    if task not in mappings:
        raise SafegenError(f"unknown task '{task}'; choose {', '.join(TASKS)}")
    pipeline_cls = getattr(pipeline_cls, "_diffusers_class", pipeline_cls)
    for mapping in mappings.values():
        for family, cls in mapping.items():
            if cls is not pipeline_cls:
                continue
            if controlnet and "controlnet" not in family:
                family += "-controlnet"
            if family in mappings[task]:
                return mappings[task][family]
    raise SafegenError(f"diffusers has no {task} pipeline in the family of {pipeline_cls.__name__}")


def _diffusers_class_of(pipe_or_source: Any, *, explain: bool = True, **config_kwargs: Any) -> type:
    """The diffusers class of a pipeline object, or the one a folder's / hub id's model_index.json names.

    ``explain=True`` turns load failures into safegen's one-line errors (the CLI's way);
    ``explain=False`` lets diffusers' exceptions through, as the drop-in loaders must.
    """
    if isinstance(pipe_or_source, (str, Path)):
        src = str(pipe_or_source)
        if explain:
            index = load_or_explain(src, lambda: DiffusionPipeline.load_config(src, **config_kwargs))
        else:
            try:
                index = DiffusionPipeline.load_config(src, **config_kwargs)
            except OSError as exc:
                missing = missing_hub_weights(src, exc, config_kwargs.get("cache_dir"))
                if missing is None:
                    raise
                raise missing from exc
        return diffusers_class_named(index.get("_class_name", ""))
    return getattr(type(pipe_or_source), "_diffusers_class", type(pipe_or_source))


def pipeline_class_for(pipe_or_source: Any, task: str | None = None, *, controlnet: bool = False) -> type:
    """The safe class matching a diffusers pipeline object, saved folder or hub id.

    With ``task`` the class is switched within the family, e.g. an SD 1.x folder and
    ``task="inpaint"`` give :class:`SafeStableDiffusionInpaintPipeline`.
    """
    cls = _diffusers_class_of(pipe_or_source)
    if task is not None or controlnet:
        cls = task_class(cls, task or "text2image", controlnet=controlnet)
    return safe_pipeline_class(cls)


class _SafeAutoPipeline:
    """Load or convert a pipeline by task, as diffusers' AutoPipelineFor* do, then make it safe."""

    task = "text2image"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__} is built with from_pretrained(...) or from_pipe(...)")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        safe_encoder: Any = None,
        safe_encoder_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load the family's pipeline for this task with a Safe-CLIP encoder (diffusers' kwargs pass through)."""
        config_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
        base = _diffusers_class_of(pretrained_model_name_or_path, explain=False, **config_kwargs)
        target = task_class(base, cls.task, controlnet=kwargs.get("controlnet") is not None)
        return safe_pipeline_class(target).from_pretrained(
            pretrained_model_name_or_path, safe_encoder=safe_encoder, safe_encoder_kwargs=safe_encoder_kwargs, **kwargs
        )

    @classmethod
    def from_pipe(
        cls, pipeline: Any, *, safe_encoder: Any = None, safe_encoder_kwargs: dict | None = None, **kwargs: Any
    ) -> Any:
        """This task's safe pipeline sharing ``pipeline``'s components (dtype and device kept)."""
        controlnet = kwargs.get("controlnet", getattr(pipeline, "controlnet", None)) is not None
        target = task_class(_diffusers_class_of(pipeline), cls.task, controlnet=controlnet)
        return safe_pipeline_class(target).from_pipe(
            pipeline, safe_encoder=safe_encoder, safe_encoder_kwargs=safe_encoder_kwargs, **kwargs
        )


class SafeAutoPipelineForText2Image(_SafeAutoPipeline):
    """The safe text-to-image pipeline of any supported family (like ``AutoPipelineForText2Image``)."""

    task = "text2image"


class SafeAutoPipelineForImage2Image(_SafeAutoPipeline):
    """The safe image-to-image pipeline of any supported family (like ``AutoPipelineForImage2Image``)."""

    task = "image2image"


class SafeAutoPipelineForInpainting(_SafeAutoPipeline):
    """The safe inpainting pipeline of any supported family (like ``AutoPipelineForInpainting``)."""

    task = "inpaint"
