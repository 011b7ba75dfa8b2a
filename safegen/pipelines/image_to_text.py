"""LLaVA-style captioners whose CLIP vision tower carries Safe-CLIP weights.

LLaVA reads the hidden states of one layer of its CLIP vision tower (patch tokens), so
Safe-CLIP's effect comes from replacing the tower's weights; the projector, the language
model, the image processor and the chat template stay the original ones. The captioner
composes transformers' own classes (``LlavaForConditionalGeneration`` and any other
model whose tower is a ``CLIPVisionModel``) instead of forking them, and
``safe_encoder=None`` gives the untouched model, so the same call is the A/B baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPVisionModel, CLIPVisionModelWithProjection

from safegen.core.devices import dtype_keyword
from safegen.core.errors import EncoderMismatchError, SafegenError
from safegen.core.hub import load_or_explain
from safegen.data.image_io import load_image
from safegen.models.encoders import inject_vision_encoder, load_safe_vision_encoder, source_id
from safegen.models.remote_code import refuse_remote_code

_logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "Describe this image."  # the paper's captioning prompt
DEFAULT_TEMPERATURE = 0.2
DEFAULT_MAX_NEW_TOKENS = 128
_FALLBACK_TEMPLATE = "USER: {image}\n{prompt} ASSISTANT:"  # LLaVA-1.5's format, used when no chat template ships
IMAGE_FITS = ("auto", "pad", "crop")


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pad a PIL image to a square with ``background``, centred, as the original LLaVA-1.5 does before CLIP."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    out = Image.new(image.mode, (side, side), background)
    out.paste(image, ((side - width) // 2, (side - height) // 2))
    return out


def find_vision_tower(model: Any) -> tuple[str, torch.nn.Module]:
    """The (name, module) of the CLIP vision tower inside a LLaVA-family model.

    Looks for a transformers ``CLIPVisionModel``/``CLIPVisionModelWithProjection`` anywhere
    in the module tree, so LLaVA, LLaVA-NeXT, VipLLaVA and similar CLIP-tower variants all
    work; a model with a different tower (SigLIP, ...) is refused by name.
    """
    found = [
        (n, m) for n, m in model.named_modules() if isinstance(m, (CLIPVisionModel, CLIPVisionModelWithProjection))
    ]
    # Keep outermost towers only (a WithProjection model never nests another, but be safe).
    found = [(n, m) for n, m in found if not any(n.startswith(o + ".") for o, _ in found if o != n)]
    if len(found) > 1:
        named = [(n, m) for n, m in found if n.split(".")[-1] == "vision_tower"]
        found = named or found
    if not found:
        towers = [type(m).__name__ for n, m in model.named_modules() if n.split(".")[-1] == "vision_tower"]
        what = f"its tower is a {towers[0]}" if towers else "no module named vision_tower was found"
        raise SafegenError(
            f"{type(model).__name__} has no CLIP vision tower ({what}); Safe-CLIP can replace CLIP towers only"
        )
    if len(found) > 1:
        names = ", ".join(n for n, _ in found)
        raise SafegenError(f"{type(model).__name__} has several CLIP vision towers ({names}); inject one by hand")
    return found[0]


def check_tower_fits(encoder: torch.nn.Module, tower: torch.nn.Module, *, model_name: str = "the captioner") -> None:
    """Refuse a Safe-CLIP whose image size, patch size or width differs from the tower's.

    These three decide how many image tokens LLaVA sees and how wide they are; a
    mismatch would otherwise surface as a shape error deep inside generation.
    """
    enc, tgt = encoder.config, tower.config
    enc_cfg = getattr(enc, "vision_config", enc)
    problems = [
        f"{field} {getattr(enc_cfg, field)} vs {getattr(tgt, field)}"
        for field in ("image_size", "patch_size", "hidden_size")
        if getattr(enc_cfg, field, None) != getattr(tgt, field, None)
    ]
    if problems:
        hint = ""
        if getattr(enc_cfg, "image_size", None) != getattr(tgt, "image_size", None):
            hint = (
                f"; {model_name} needs a {tgt.image_size} px Safe-CLIP "
                "(LLaVA-1.5: aimagelab/safeclip_vit-l_14_336, the original LLaVA: aimagelab/safeclip_vit-l_14)"
            )
        raise EncoderMismatchError(
            f"safe vision encoder '{source_id(encoder)}' does not fit the vision tower of {model_name}: "
            + "; ".join(problems)
            + " (encoder vs tower)"
            + hint
        )


class SafeLlavaCaptioner:
    """Caption images with a LLaVA-family model whose vision tower is a Safe-CLIP encoder.

    Args:
        model: a loaded transformers image-text-to-text model with a CLIP vision tower.
        processor: its processor (image processor, tokenizer, chat template), kept as is.
        model_id: a printable id of the base model, recorded with every caption.

    Build one with :meth:`from_pretrained` (hub id or folder) or :meth:`from_model`.

    ``image_fit`` says how non-square images become the tower's square input: ``pad``
    (the original LLaVA-1.5: pad to a square with the processor's mean colour, so nothing
    at the edges is lost), ``crop`` (llava-hf's processor: resize and centre-crop, which
    can cut unsafe content at the edges away) or ``auto``: ``pad`` for LLaVA models
    (``model_type`` llava, which LLaVA-1.5 is), the processor's own behaviour otherwise.
    The choice is recorded with every caption (:attr:`image_fit`).
    """

    def __init__(self, model: Any, processor: Any, *, model_id: str | None = None, image_fit: str = "auto"):
        self.model = model
        self.processor = processor
        self.model_id = (
            model_id or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
        )
        self.vision_tower_name, self.vision_tower = find_vision_tower(model)
        if image_fit not in IMAGE_FITS:
            raise SafegenError(f"image_fit must be one of {', '.join(IMAGE_FITS)}, got '{image_fit}' (--image-fit)")
        if image_fit == "auto":
            image_fit = "pad" if getattr(getattr(model, "config", None), "model_type", "") == "llava" else "crop"
        self.image_fit = image_fit
        self._safe_encoder_id: str | None = None
        self._original_tower: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        safe_encoder: Any = None,
        safe_encoder_kwargs: dict | None = None,
        processor: Any = None,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
        keep_original: bool = False,
        image_fit: str = "auto",
        **hf_kwargs: Any,
    ) -> SafeLlavaCaptioner:
        """Load a LLaVA-family model and processor, then swap in ``safe_encoder``'s vision weights.

        ``safe_encoder`` is anything :func:`safegen.load_safe_vision_encoder` reads (hub id,
        folder, open_clip checkpoint, LoRA adapter, loaded module) or None for the original
        model. ``keep_original`` keeps a CPU copy of the original tower so that
        :meth:`set_safe_encoder` (None) can restore it later. Other keywords go to
        transformers' ``from_pretrained``.
        """
        source = str(pretrained_model_name_or_path)
        if torch_dtype is not None:
            hf_kwargs[dtype_keyword("transformers")] = torch_dtype
        hf_kwargs["trust_remote_code"] = False  # model code from a folder or the hub never runs
        refuse_remote_code(source)
        model = load_or_explain(source, lambda: AutoModelForImageTextToText.from_pretrained(source, **hf_kwargs))
        refuse_remote_code(source, model.config)
        if processor is None:
            processor = load_or_explain(source, lambda: AutoProcessor.from_pretrained(source, trust_remote_code=False))
        if device is not None:
            model = model.to(device)
        return cls.from_model(
            model.eval(),
            processor,
            safe_encoder=safe_encoder,
            safe_encoder_kwargs=safe_encoder_kwargs,
            model_id=source,
            keep_original=keep_original,
            image_fit=image_fit,
        )

    @classmethod
    def from_model(
        cls,
        model: Any,
        processor: Any,
        *,
        safe_encoder: Any = None,
        safe_encoder_kwargs: dict | None = None,
        model_id: str | None = None,
        keep_original: bool = False,
        image_fit: str = "auto",
    ) -> SafeLlavaCaptioner:
        """Wrap an already-loaded model (its tower weights are replaced in place when ``safe_encoder`` is given)."""
        captioner = cls(model, processor, model_id=model_id, image_fit=image_fit)
        if safe_encoder is not None:
            captioner.set_safe_encoder(safe_encoder, keep_original=keep_original, **(safe_encoder_kwargs or {}))
        return captioner

    # ------------------------------------------------------------------ the safe encoder

    @property
    def safe_encoder_id(self) -> str | None:
        """The Safe-CLIP vision encoder in use; None while the tower holds its original weights."""
        return self._safe_encoder_id

    def set_safe_encoder(
        self, encoder: Any, *, keep_original: bool = True, allow_identical: bool = False, **load_kwargs: Any
    ) -> SafeLlavaCaptioner:
        """Swap the tower's weights for ``encoder``'s (in place), or restore the original with None.

        Checks image size, patch size and hidden size (then every tower shape) before any
        weight changes. The first swap keeps a CPU copy of the original tower when
        ``keep_original`` (about 0.6 GB for LLaVA-1.5's ViT-L/14-336 in fp16), which makes
        original-vs-safe comparisons possible without loading the model twice. The swap is
        verified tensor by tensor, and one that leaves the tower as it was is refused unless
        ``allow_identical``; the safe encoder id is recorded only after the check passed.
        """
        if encoder is None:
            if self._safe_encoder_id is None:
                return self
            if self._original_tower is None:
                raise SafegenError(
                    "the original vision tower was not kept; reload the model "
                    "(or pass keep_original=True on the first swap)"
                )
            self.vision_tower.load_state_dict(self._original_tower)
            self._safe_encoder_id = None
            _logger.info("restored the original vision tower of %s", self.model_id)
            return self
        module = load_safe_vision_encoder(encoder, **load_kwargs)
        check_tower_fits(module, self.vision_tower, model_name=self.model_id)
        if keep_original and self._safe_encoder_id is None and self._original_tower is None:
            self._original_tower = {
                k: v.detach().to("cpu", copy=True) for k, v in self.vision_tower.state_dict().items()
            }
        try:
            inject_vision_encoder(self.vision_tower, module, allow_identical=allow_identical)
        except SafegenError:
            # Checks run before any write; should the read-back still fail, go back to the kept
            # original so that the recorded id (None) says what the tower holds.
            if self._original_tower is not None:
                self.vision_tower.load_state_dict(self._original_tower)
                self._safe_encoder_id = None
            raise
        self._safe_encoder_id = source_id(encoder)
        _logger.info(
            "injected safe vision encoder %s into %s.%s", self._safe_encoder_id, self.model_id, self.vision_tower_name
        )
        return self

    # ------------------------------------------------------------------ captioning

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    def build_prompt(self, prompt: str = DEFAULT_PROMPT) -> str:
        """The full model input text for one image and ``prompt``, via the model's own chat template.

        A prompt that already contains the image token is taken as a complete, raw prompt.
        """
        image_token = getattr(self.processor, "image_token", "<image>")
        if image_token in prompt:
            return prompt
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return _FALLBACK_TEMPLATE.format(image=image_token, prompt=prompt)

    def caption(
        self,
        images: Any,
        prompt: str = DEFAULT_PROMPT,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        batch_size: int = 8,
        top_p: float | None = None,
        seed: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Caption one image or a list of images (PIL images or file paths), in batches.

        Defaults follow the paper (temperature 0.2, 128 new tokens, "Describe this image.").
        ``temperature=0`` decodes greedily (deterministic); otherwise ``seed`` makes sampling
        repeatable. ``progress(done, total)`` is called after each batch. Returns one caption
        per image, in order. Paths are read with :func:`safegen.data.image_io.load_image`, so a
        bad file raises an error naming it.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        single = not isinstance(images, (list, tuple))
        pil_images = [_as_pil(im) for im in ([images] if single else images)]
        if self.image_fit == "pad":
            mean = getattr(getattr(self.processor, "image_processor", None), "image_mean", None) or [0.5, 0.5, 0.5]
            background = tuple(int(x * 255) for x in mean)
            pil_images = [expand_to_square(im, background) for im in pil_images]
        text = self.build_prompt(prompt)
        tokenizer = self.processor.tokenizer
        gen = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0)
        if temperature > 0:
            gen["temperature"] = temperature
            if top_p is not None:
                gen["top_p"] = top_p
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        gen["pad_token_id"] = pad_id
        gen.update(generate_kwargs)
        if seed is not None:
            torch.manual_seed(seed)

        captions: list[str] = []
        old_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # decoder-only batches must end at the same position
        try:
            for start in range(0, len(pil_images), batch_size):
                batch = pil_images[start : start + batch_size]
                inputs = self.processor(images=batch, text=[text] * len(batch), return_tensors="pt", padding=True)
                inputs = inputs.to(self.device)
                if "pixel_values" in inputs:
                    inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
                with torch.inference_mode():
                    out = self.model.generate(**inputs, **gen)  # (B, prompt + new)
                new_tokens = out[:, inputs["input_ids"].shape[1] :]
                captions.extend(s.strip() for s in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
                if progress is not None:
                    progress(len(captions), len(pil_images))
        finally:
            tokenizer.padding_side = old_side
        return captions

    def __call__(self, images: Any, prompt: str = DEFAULT_PROMPT, **kwargs: Any) -> list[str]:
        return self.caption(images, prompt, **kwargs)

    def __repr__(self) -> str:
        return (
            f"SafeLlavaCaptioner(model={self.model_id!r}, safe_encoder={self._safe_encoder_id!r}, "
            f"image_fit={self.image_fit!r})"
        )


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (str, Path)):
        return load_image(image)
    raise TypeError(f"images must be PIL images or file paths, got {type(image).__name__}")
