"""From CLI-style choices (preset, model, safe encoder, device, dtype) to loaded pipelines.

Shared by `safegen t2i`, `safegen batch` and `safegen eval`, so every command resolves
presets and devices the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from safegen.core.devices import dtype_keyword
from safegen.core.errors import UsageError
from safegen.models.presets import get_preset

_logger = logging.getLogger(__name__)

NONE_WORDS = ("none", "original", "off", "")


@dataclass
class Sources:
    """Which base model and which safe encoder a run uses."""

    base: str
    safe_encoder: str | None
    preset: str | None = None


def resolve_sources(task: str, preset: str | None, model: str | None, safe_encoder: str | None) -> Sources:
    """Combine --preset / --model / --safe-encoder for ``task`` ("t2i" or "i2t").

    Explicit flags override the preset's entries; ``--safe-encoder none`` asks for the
    original model. Presets that carry both worlds (the toy one) name their captioner and
    vision encoder apart from the text-to-image pair.
    """
    base, safe, name = None, None, None
    if preset:
        p = get_preset(preset)
        if task not in p.task:
            raise UsageError(f"preset '{preset}' is for {p.task}, not {task}; see `safegen presets`")
        if task == "i2t" and p.task != "i2t":
            base, safe = p.captioner, p.safe_vision_encoder
        else:
            base, safe = p.base, p.safe_encoder
        name = p.name
    if model:
        base = model
    if safe_encoder is not None:
        safe = None if safe_encoder.strip().lower() in NONE_WORDS else safe_encoder
    if not base:
        raise UsageError("no model given: pass --preset NAME (see `safegen presets`) or --model ID_OR_FOLDER")
    return Sources(base=base, safe_encoder=safe, preset=name)


def resolve_t2i_sources(preset: str | None, model: str | None, safe_encoder: str | None) -> Sources:
    return resolve_sources("t2i", preset, model, safe_encoder)


def resolve_i2t_sources(preset: str | None, model: str | None, safe_encoder: str | None) -> Sources:
    return resolve_sources("i2t", preset, model, safe_encoder)


def load_t2i_pipeline(
    base: str,
    safe_encoder: Any = None,
    *,
    device: str = "cpu",
    torch_dtype: Any = None,
    attention: str = "auto",
    safety_checker: bool = False,
    safe_encoder_kwargs: dict[str, Any] | None = None,
    task: str = "text2image",
) -> Any:
    """Load a safe pipeline of ``base``'s family for ``task`` (original when ``safe_encoder`` is None).

    ``task`` is "text2image", "image2image" or "inpaint": an SD text-to-image folder loads as
    its img2img or inpainting pipeline, sharing nothing to convert. ``safe_encoder_kwargs`` go
    to the encoder loader (``activation``, ``base``: the CLI's --activation and --base).
    diffusers' built-in safety checker is off by default: safegen flags outputs with its own
    classifiers (``--check``) and never blacks images out silently.
    """
    import inspect

    from safegen.core.terminal import pipeline_progress_bar, quiet_libraries
    from safegen.pipelines.attention import configure_attention
    from safegen.pipelines.auto import pipeline_class_for

    quiet_libraries()
    cls = pipeline_class_for(base, task=None if task == "text2image" else task)
    kwargs: dict[str, Any] = {"trust_remote_code": False}  # never run code shipped with a model
    if torch_dtype is not None:
        kwargs[dtype_keyword("diffusers")] = torch_dtype
    if not safety_checker and "safety_checker" in inspect.signature(cls.__init__).parameters:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(base, safe_encoder=safe_encoder, safe_encoder_kwargs=safe_encoder_kwargs, **kwargs)
    pipe = pipe.to(device)
    configure_attention(pipe, attention, device=device)
    pipeline_progress_bar(pipe)
    return pipe


def safe_twin(pipe: Any, safe_encoder: Any, safe_encoder_kwargs: dict[str, Any] | None = None) -> Any:
    """A safe pipeline sharing ``pipe``'s UNet/VAE (for side-by-side comparisons)."""
    from safegen.pipelines.auto import make_safe

    return make_safe(pipe, safe_encoder=safe_encoder, safe_encoder_kwargs=safe_encoder_kwargs)


def prompt_overflow(tokenizer: Any, prompt: str) -> str | None:
    """The part of ``prompt`` the tokenizer cuts off at its model_max_length, or None."""
    limit = getattr(tokenizer, "model_max_length", 77)
    # Tokenize a head long enough to hold more than `limit` tokens of ordinary text: a 10 MB
    # prompt then costs what a short one does. Only a head of unusually long tokens falls back
    # to the whole prompt.
    head = prompt[: max(limit, 1) * 32]
    ids = tokenizer(head, truncation=False, add_special_tokens=True).input_ids
    if len(ids) <= limit and len(head) < len(prompt):
        ids = tokenizer(prompt, truncation=False, add_special_tokens=True).input_ids
    if len(ids) <= limit:
        return None
    kept = tokenizer.decode(ids[1 : limit - 1], skip_special_tokens=True)
    # Recover the cut words from the original text (decode normalises case/spacing).
    kept_words = len(kept.split())
    words = prompt.split()
    return " ".join(words[kept_words:]) or tokenizer.decode(ids[limit - 1 : -1], skip_special_tokens=True)


def load_t2i_pipelines(
    base: str, safe_encoder: Any = None, *, compare: bool = False, safe_encoder_kwargs: dict | None = None, **load: Any
) -> tuple[Any, Any]:
    """``(original, safe)``: the safe pipeline of ``base`` and, with ``compare``, the original beside it.

    The two share the UNet and VAE (:func:`safe_twin`); without ``compare`` the original is
    None. ``load`` goes to :func:`load_t2i_pipeline` (device, torch_dtype, attention, task).
    """
    if compare:
        original = load_t2i_pipeline(base, None, **load)
        return original, safe_twin(original, safe_encoder, safe_encoder_kwargs)
    return None, load_t2i_pipeline(base, safe_encoder, safe_encoder_kwargs=safe_encoder_kwargs, **load)


def native_pixels(pipe: Any) -> int:
    """The area the model was trained at (512x512 for SD 1.x, 1024x1024 for SDXL); 1024x1024 when unknown."""
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    scale = getattr(pipe, "vae_scale_factor", 8)
    if isinstance(sample, int):
        return (sample * scale) ** 2
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        return sample[0] * sample[1] * scale**2
    return 1024 * 1024
