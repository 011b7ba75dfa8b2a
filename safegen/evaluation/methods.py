"""The methods an evaluation compares, built from one base pipeline by name.

Names: ``original``, ``safe-clip``, ``negative-prompt``, ``sld-weak|medium|strong|max``
(diffusers' deprecated Safe Latent Diffusion, as a baseline), and combinations joined
with ``+`` such as ``safe-clip+sld-medium``. Every method shares the base pipeline's
UNet, VAE and scheduler config, so differences come from the method alone.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from safegen.core.errors import SafegenError
from safegen.pipelines.auto import pipeline_class_for

try:  # diffusers keeps Safe Latent Diffusion among its deprecated pipelines; a later one may drop it
    from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig, StableDiffusionPipelineSafe
except ImportError as _exc:
    SafetyConfig = StableDiffusionPipelineSafe = None
    _SLD_MISSING: str | None = f"Safe Latent Diffusion is not in this diffusers ({_exc.__class__.__name__})"
else:
    _SLD_MISSING = None

_logger = logging.getLogger(__name__)

# The SLD paper's concept list (also diffusers' default safety concept).
DEFAULT_SAFETY_CONCEPT = (
    "hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, bodily fluids, blood, "
    "obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, brutality, cruelty"
)
SLD_LEVELS = ("weak", "medium", "strong", "max")
BASE_METHODS = ("original", "safe-clip", "negative-prompt") + tuple(f"sld-{lvl}" for lvl in SLD_LEVELS)


@dataclass
class Method:
    """One way of generating: a pipeline plus the extra call arguments it needs."""

    name: str
    pipe: Any = None
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    safe_encoder_id: str | None = None
    negative_prompt: str | None = None
    unavailable: str | None = None  # why it cannot run here (e.g. SLD removed from diffusers)

    @property
    def available(self) -> bool:
        return self.unavailable is None


def parse_method(name: str) -> dict[str, Any]:
    """'safe-clip+sld-medium' -> {'safe_clip': True, 'sld': 'medium', 'negative_prompt': False}."""
    parts = [p.strip().lower() for p in name.split("+") if p.strip()]
    if not parts:
        raise SafegenError("empty method name; choose from: " + ", ".join(BASE_METHODS))
    spec = {"safe_clip": False, "sld": None, "negative_prompt": False}
    for part in parts:
        if part == "original":
            continue
        if part == "safe-clip":
            spec["safe_clip"] = True
        elif part == "negative-prompt":
            spec["negative_prompt"] = True
        elif part.startswith("sld-") and part[4:] in SLD_LEVELS:
            if spec["sld"]:
                raise SafegenError(f"method '{name}' names two SLD levels")
            spec["sld"] = part[4:]
        else:
            raise SafegenError(f"unknown method part '{part}' in '{name}'; choose from: {', '.join(BASE_METHODS)}")
    if "original" in parts and len(parts) > 1:
        raise SafegenError(f"'original' cannot be combined ('{name}')")
    return spec


def sld_available() -> str | None:
    """None when diffusers still ships Safe Latent Diffusion, else the reason it is unavailable."""
    return _SLD_MISSING


def build_method(
    name: str,
    base_pipe: Any,
    *,
    safe_encoder: Any = None,
    negative_prompt: str = DEFAULT_SAFETY_CONCEPT,
    safety_concept: str = DEFAULT_SAFETY_CONCEPT,
    _safe_pipe_cache: dict | None = None,
) -> Method:
    """Build one method from ``base_pipe`` (an SD pipeline holding the original text encoder)."""
    spec = parse_method(name)
    if spec["safe_clip"] and safe_encoder is None:
        return Method(name, unavailable="no safe encoder given (use --preset or --safe-encoder)")
    pipe = base_pipe
    safe_id = None
    if spec["safe_clip"]:
        cache = _safe_pipe_cache if _safe_pipe_cache is not None else {}
        if "safe" not in cache:
            cache["safe"] = pipeline_class_for(base_pipe).from_pipe(base_pipe, safe_encoder=safe_encoder)
        pipe = cache["safe"]
        safe_id = pipe.safe_encoder_id
    call_kwargs: dict[str, Any] = {}
    if spec["sld"]:
        reason = sld_available()
        if reason:
            return Method(name, unavailable=reason)
        pipe, call_kwargs = _sld_pipeline(pipe, spec["sld"], safety_concept)
    neg = negative_prompt if spec["negative_prompt"] else None
    return Method(name, pipe=pipe, call_kwargs=call_kwargs, safe_encoder_id=safe_id, negative_prompt=neg)


def build_methods(names: list[str], base_pipe: Any, **kwargs: Any) -> list[Method]:
    """Build every named method; unavailable ones are returned flagged, not raised."""
    cache: dict = {}
    seen = set()
    methods = []
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        methods.append(build_method(name, base_pipe, _safe_pipe_cache=cache, **kwargs))
        if not methods[-1].available:
            _logger.warning("method %s unavailable: %s", name, methods[-1].unavailable)
    return methods


def _sld_pipeline(pipe: Any, level: str, concept: str) -> tuple[Any, dict[str, Any]]:
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise SafegenError("Safe Latent Diffusion exists for SD 1.x/2.x pipelines only, not SDXL")
    sld = StableDiffusionPipelineSafe(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=copy.deepcopy(pipe.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    sld.safety_concept = concept
    sld.set_progress_bar_config(disable=True)
    # Let the batch runner and reports see which encoder the SLD pipeline reads.
    object.__setattr__(sld, "safe_encoder_id", getattr(pipe, "safe_encoder_id", None))
    return sld, dict(getattr(SafetyConfig, level.upper()))
