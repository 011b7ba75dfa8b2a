"""The models behind the service: one call generates (or captions) a whole batch.

:class:`ImageEngine` wraps the safe text-to-image pipeline (and, with ``--allow-compare``,
the original one sharing its UNet and VAE), the output classifier and the output policy
of `safegen batch` (:func:`safegen.jobs.policy.apply_policy`). Every image gets its own
CPU generator seeded with its own seed, so an image is the same whether it was generated
alone or beside other requests' images. :class:`CaptionEngine` wraps a
:class:`~safegen.SafeLlavaCaptioner`. Both are plain synchronous objects: the batcher calls
them from its threads (``ImageEngine.render`` on the model thread, ``finish`` beside it).
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from safegen.core.devices import resolve_device, resolve_dtype
from safegen.core.io import png_bytes
from safegen.jobs.policy import apply_policy
from safegen.models.presets import get_preset
from safegen.pipelines.image_to_text import SafeLlavaCaptioner
from safegen.pipelines.loading import (
    load_t2i_pipeline,
    prompt_overflow,
    resolve_i2t_sources,
    resolve_t2i_sources,
    safe_twin,
)
from safegen.safety import load_classifier

_logger = logging.getLogger(__name__)

VARIANTS = ("safe", "original")


def public_id(source: Any, preset: str | None = None) -> str | None:
    """A printable model id that never reveals the operator's file layout.

    Hub ids are kept; a local folder or file is shown by its last name, prefixed by the
    preset it came from (``toy/safe_clip``).
    """
    if source is None:
        return None
    text = str(source)
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        name = path.name or text
        return f"{preset}/{name}" if preset else name
    return text


@dataclass(frozen=True)
class ImageSettings:
    """What must match for images to share a pipeline call (the batch key)."""

    steps: int
    guidance: float
    width: int
    height: int
    negative_prompt: str
    variant: str = "safe"


@dataclass(frozen=True)
class ImageJob:
    """One image to make: a prompt, its own seed and the shared settings."""

    prompt: str
    seed: int
    settings: ImageSettings


@dataclass
class ImageResult:
    """One finished image: PNG bytes after the output policy (None when blocked) and the verdict."""

    png: bytes | None
    seed: int
    decision: str
    safety: dict[str, Any] | None
    variant: str


class ImageEngine:
    """Generates batches of :class:`ImageJob` with one pipeline call each.

    Args:
        pipe: the safe pipeline (a diffusers text-to-image pipeline).
        original: the original pipeline (same UNet/VAE), only for ``--allow-compare``.
        classifier: an output classifier or None (no check: every decision is ``pass``).
        policy: what to do with flagged images, a name of :data:`safegen.jobs.policy.ON_UNSAFE`.
        model_id / safe_encoder_id / classifier_name: recorded in answers and PNG chunks.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        original: Any = None,
        classifier: Any = None,
        policy: str = "blur",
        model_id: str = "model",
        safe_encoder_id: str | None = None,
        classifier_name: str | None = None,
    ):
        self.pipe, self.original, self.classifier, self.policy = pipe, original, classifier, policy
        self.model_id, self.safe_encoder_id = model_id, safe_encoder_id
        self.classifier_name = classifier_name or (getattr(classifier, "name", None) if classifier else None)
        for p in (pipe, original):
            if p is not None and hasattr(p, "set_progress_bar_config"):
                p.set_progress_bar_config(disable=True)
        # Request handlers check prompt length while the worker thread generates. A fast
        # tokenizer resets shared padding/truncation state on every call, so sharing the
        # pipeline's would let a check un-pad the pipeline's negative-prompt ids mid-call
        # (seen as HTTP 500s under load); the check gets its own copy.
        tokenizer = getattr(pipe, "tokenizer", None)
        self._check_tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else None
        self._check_lock = threading.Lock()  # request handlers may run on several threads too

    def prompt_overflow(self, prompt: str) -> str | None:
        """The part of ``prompt`` the text encoder will not read, or None; safe while a batch generates."""
        if self._check_tokenizer is None:
            return None
        with self._check_lock:
            return prompt_overflow(self._check_tokenizer, prompt)

    @property
    def default_size(self) -> int:
        """The side the model was trained at (UNet sample size x VAE scale)."""
        unet = getattr(self.pipe, "unet", None)
        scale = int(getattr(self.pipe, "vae_scale_factor", 8))
        return int(unet.config.sample_size) * scale if unet is not None else 512

    def generate(self, jobs: list[ImageJob]) -> list[ImageResult]:
        """Generate, classify and apply the policy to a batch of jobs with equal settings."""
        return self.finish(jobs, self.render(jobs))

    def render(self, jobs: list[ImageJob]) -> list[Any]:
        """The pipeline call: PIL images for a batch of jobs with equal settings."""
        s = jobs[0].settings
        if any(j.settings != s for j in jobs):
            raise ValueError("a batch must share its settings")
        pipe = self.original if s.variant == "original" else self.pipe
        if pipe is None:
            raise ValueError("the original pipeline is not loaded (start the server with --allow-compare)")
        # One CPU generator per image: the same noise whatever the batch or the device.
        generators = [torch.Generator("cpu").manual_seed(j.seed) for j in jobs]
        kwargs: dict[str, Any] = {}
        if s.negative_prompt:
            kwargs["negative_prompt"] = [s.negative_prompt] * len(jobs)
        with torch.inference_mode():
            images = pipe(
                prompt=[j.prompt for j in jobs],
                num_inference_steps=s.steps,
                guidance_scale=s.guidance,
                width=s.width,
                height=s.height,
                generator=generators,
                output_type="pil",
                **kwargs,
            ).images
        return list(images)

    def finish(self, jobs: list[ImageJob], images: list[Any]) -> list[ImageResult]:
        """Classify, apply the output policy and encode PNGs (runs beside the next pipeline call)."""
        s = jobs[0].settings
        pipe = self.original if s.variant == "original" else self.pipe
        verdicts = self.classifier.classify(images) if self.classifier is not None else [None] * len(images)
        results = []
        safe_id = self.safe_encoder_id if s.variant == "safe" else None
        for job, image, verdict in zip(jobs, images, verdicts, strict=True):
            unsafe = bool(verdict.unsafe) if verdict is not None else False
            # The original of a comparison is shown as it is: the operator opted in with --allow-compare.
            policy = "keep" if s.variant == "original" else self.policy
            out, decision = apply_policy(image, unsafe, policy)
            if decision == "drop":
                decision = "block"
            params = {
                "prompt": job.prompt,
                "negative_prompt": s.negative_prompt,
                "seed": job.seed,
                "steps": s.steps,
                "guidance": s.guidance,
                "size": f"{s.width}x{s.height}",
                "model": self.model_id,
                "safe_encoder": safe_id,
                "scheduler": type(getattr(pipe, "scheduler", None)).__name__,
                "variant": s.variant,
                "decision": decision,
            }
            safety = None
            if verdict is not None:
                safety = {"classifier": self.classifier_name, **verdict.to_dict()}
            results.append(
                ImageResult(
                    png=None if out is None else png_bytes(out, params),
                    seed=job.seed,
                    decision=decision,
                    safety=safety,
                    variant=s.variant,
                )
            )
        return results


@dataclass(frozen=True)
class CaptionJob:
    """One image to caption; jobs with equal generation settings share a call."""

    image: Any
    prompt: str
    temperature: float
    max_new_tokens: int
    seed: int


class CaptionEngine:
    """Captions batches of :class:`CaptionJob` with a :class:`~safegen.SafeLlavaCaptioner`."""

    def __init__(self, captioner: Any, *, model_id: str = "captioner", safe_encoder_id: str | None = None):
        self.captioner = captioner
        self.model_id, self.safe_encoder_id = model_id, safe_encoder_id

    def caption(self, jobs: list[CaptionJob]) -> list[str]:
        first = jobs[0]
        return self.captioner.caption(
            [j.image for j in jobs],
            first.prompt,
            temperature=first.temperature,
            max_new_tokens=first.max_new_tokens,
            batch_size=len(jobs),
            seed=first.seed,
        )


def caption_key(job: CaptionJob, token: int) -> tuple:
    """Greedy captions batch with anything that shares the prompt; sampled ones run alone.

    Sampling draws from one global generator per call, so a sampled caption would depend
    on its neighbours; alone (``token`` unique) it depends on its seed only.
    """
    if job.temperature == 0:
        return ("greedy", job.prompt, job.max_new_tokens)
    return ("sampled", token)


def load_image_engine(config: Any) -> ImageEngine:
    """Load the pipelines and the classifier a :class:`~safegen.serve.config.ServeConfig` names."""
    sources = resolve_t2i_sources(config.preset, config.model, config.safe_encoder)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    original = None
    if config.allow_compare and sources.safe_encoder is not None:
        original = load_t2i_pipeline(sources.base, None, device=device, torch_dtype=dtype, attention=config.attention)
        pipe = safe_twin(original, sources.safe_encoder)
    else:
        pipe = load_t2i_pipeline(
            sources.base, sources.safe_encoder, device=device, torch_dtype=dtype, attention=config.attention
        )
    check = resolve_check(config.check, config.preset)
    classifier = None
    if check:
        classifier = load_classifier(check, **({} if config.threshold is None else {"threshold": config.threshold}))
    return ImageEngine(
        pipe,
        original=original,
        classifier=classifier,
        policy=config.policy,
        model_id=served_name(config.preset, sources.base),
        safe_encoder_id=public_id(sources.safe_encoder, sources.preset),
        classifier_name=check,
    )


def load_caption_engine(config: Any) -> CaptionEngine:
    """Load the captioner a config names (``--caption-preset``/``--captioner``, or a preset with one)."""
    preset = config.caption_preset or (config.preset if not config.captioner else None)
    sources = resolve_i2t_sources(preset, config.captioner, config.safe_vision_encoder)
    device = resolve_device(config.device)
    captioner = SafeLlavaCaptioner.from_pretrained(
        sources.base,
        safe_encoder=sources.safe_encoder,
        device=device,
        torch_dtype=resolve_dtype(config.dtype, device),
    )
    name = served_name(preset, sources.base)
    if preset and preset == config.preset and config.model is None and "t2i" in get_preset(preset).task:
        name = f"{name}-captioner"  # one preset serving both tasks: two model ids
    return CaptionEngine(captioner, model_id=name, safe_encoder_id=public_id(sources.safe_encoder, sources.preset))


def served_name(preset: str | None, base: str) -> str:
    """The model id clients use: the preset name, else the model's public id."""
    return preset or public_id(base) or "model"


def resolve_check(check: str | None, preset: str | None) -> str | None:
    """``auto`` -> the preset's own classifier (the toy world's) or NudeNet; None: no check."""
    if check != "auto":
        return check
    if preset:
        return get_preset(preset).extra.get("classifier", "nudenet")
    return "nudenet"
