"""The trainable Safe-CLIP model: a CLIP with LoRA or full fine-tuning, plus its reference.

:func:`load_clip` reads any supported base (transformers CLIPModel folder or hub id, or an
open_clip checkpoint converted by ``safegen.models.encoders``) with its tokenizer and image
processor. :class:`SafeCLIPModule` wraps it for training: it encodes a batch with the
trained towers and with the reference encoders T0/V0, which are

- ``frozen`` (the paper): the original weights. With LoRA that is the same model with the
  adapters disabled (no extra memory); with full fine-tuning a frozen copy.
- ``detached`` (the released code): a no-grad pass of the *current* model, dropout on.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoTokenizer, CLIPImageProcessor, CLIPModel

from safegen import create_clip_tokenizer, load_or_explain
from safegen.models.encoders import load_open_clip_checkpoint, load_safe_clip_model, source_towers
from safegen.models.remote_code import refuse_remote_code
from safegen_train.config import ConfigError, LossConfig, TrainConfig
from safegen_train.losses import suffix_alignment

_logger = logging.getLogger(__name__)

_OPEN_CLIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
TOWER_PREFIXES = {"text": ("text_model.", "text_projection."), "vision": ("vision_model.", "visual_projection.")}


@dataclass
class LoadedCLIP:
    """A base CLIPModel with what is needed to feed it, and where it came from."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any
    image_processor: Any
    source: str
    tokenizer_source: str | None = None  # folder/id the tokenizer was read from (None: built in code)
    processor_source: str | None = None


def load_clip(
    source: str, *, activation: str | None = None, tokenizer: str | None = None, open_clip_model: str | None = None
) -> LoadedCLIP:
    """Load a base CLIP (both towers) for training, with tokenizer and image processor.

    ``source``: a transformers ``CLIPModel`` folder or hub id (same code path; offline, a
    missing id fails in one sentence), or an open_clip checkpoint file / folder.
    """
    path = Path(source).expanduser()
    if path.is_file() or (path.is_dir() and not (path / "config.json").exists()):
        ckpt = (
            path
            if path.is_file()
            else next((p for p in sorted(path.iterdir()) if p.suffix in _OPEN_CLIP_SUFFIXES), None)
        )
        if ckpt is None or ckpt.suffix not in _OPEN_CLIP_SUFFIXES:
            raise ConfigError(f"model '{source}' is neither a CLIP folder (config.json) nor an open_clip checkpoint")
        # Head width and activation come from open_clip_config.json beside the file, the open_clip model
        # name, or ``activation`` for OpenAI shapes; anything undescribed is refused by the converter.
        model = load_open_clip_checkpoint(ckpt, activation=activation, model_name=open_clip_model)
    else:
        config = load_or_explain(source, lambda: AutoConfig.from_pretrained(source, trust_remote_code=False))
        refuse_remote_code(source, config)
        if getattr(config, "model_type", "") != "clip":
            raise ConfigError(
                f"model '{source}' is a '{getattr(config, 'model_type', '?')}' model; training needs a full CLIPModel "
                "(model_type clip) with both towers"
            )
        model = load_or_explain(source, lambda: CLIPModel.from_pretrained(source, trust_remote_code=False))
    model.float()
    tok, tok_src = _load_tokenizer(tokenizer or source, model)
    proc, proc_src = _load_image_processor(source, model)
    return LoadedCLIP(model, tok, proc, str(source), tok_src, proc_src)


def load_image_processor(source: str, *, activation: str | None = None) -> Any:
    """The image processor training would use for ``source``, without loading the weights when a
    config.json says the vision tower's size (open_clip checkpoints are loaded to learn it)."""
    path = Path(source).expanduser()
    if path.is_file() or (path.is_dir() and not (path / "config.json").exists()):
        return load_clip(source, activation=activation).image_processor
    config = load_or_explain(source, lambda: AutoConfig.from_pretrained(source, trust_remote_code=False))
    refuse_remote_code(source, config)
    if getattr(config, "model_type", "") != "clip":
        raise ConfigError(f"model '{source}' is a '{getattr(config, 'model_type', '?')}' model, not a CLIPModel")
    return _load_image_processor(source, SimpleNamespace(config=config))[0]


def load_safe_clip(
    source: str, *, original: LoadedCLIP, activation: str | None = None, base: str | None = None
) -> LoadedCLIP:
    """The Safe-CLIP side of an evaluation, from any source ``safegen-train export`` or safegen reads.

    A source with both towers loads as itself. A one-tower export (``--what text`` or
    ``--what vision``) or a LoRA adapter is applied to a copy of ``original`` (the CLIP it
    was trained from), whose other tower, tokenizer and image processor it keeps.
    ``activation``/``base``: as the CLI's --activation/--base.
    """
    path = Path(source).expanduser()
    if source_towers(source) == ("text", "vision") and not (path / "adapter_config.json").is_file():
        return load_clip(source, activation=activation, open_clip_model=base)
    model = load_safe_clip_model(source, original=original.model, activation=activation, base=base).float()
    return LoadedCLIP(
        model,
        original.tokenizer,
        original.image_processor,
        source,
        original.tokenizer_source,
        original.processor_source,
    )


def _has_files(folder: Path, names: tuple[str, ...]) -> bool:
    return folder.is_dir() and any((folder / n).exists() for n in names)


def _load_tokenizer(source: str, model: Any) -> tuple[Any, str | None]:
    """The source's tokenizer; failing that, CLIP's BPE rebuilt offline for the model's vocab size."""
    path = Path(source).expanduser()
    tok_files = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
    if _has_files(path, tok_files) or (not path.exists() and "/" in source and not path.suffix):
        try:
            refuse_remote_code(source)
            tok = load_or_explain(source, lambda: AutoTokenizer.from_pretrained(source, trust_remote_code=False))
            return tok, source
        except Exception as exc:  # noqa: BLE001 - fall back to the built tokenizer below, saying why
            _logger.warning("no tokenizer loaded from '%s' (%s); building CLIP's BPE offline", source, exc)
    vocab = model.config.text_config.vocab_size
    merges = vocab - 512 - 2  # 256 byte symbols, their 256 end-of-word forms, 2 special tokens
    max_len = model.config.text_config.max_position_embeddings
    try:
        tokenizer = create_clip_tokenizer(merges, model_max_length=max_len)  # refuses more merges than CLIP's
    except ValueError:
        raise ConfigError(
            f"no tokenizer found beside '{source}' and vocab size {vocab} is not CLIP's; pass tokenizer"
        ) from None
    _logger.info("using CLIP's BPE tokenizer built offline (%d merges, vocab %d)", merges, vocab)
    return tokenizer, None


def _load_image_processor(source: str, model: Any) -> tuple[Any, str | None]:
    """The source's CLIPImageProcessor; else standard CLIP preprocessing at the tower's size."""
    path = Path(source).expanduser()
    if _has_files(path, ("preprocessor_config.json",)) or (not path.exists() and "/" in source and not path.suffix):
        try:
            refuse_remote_code(source)
            proc = load_or_explain(source, lambda: CLIPImageProcessor.from_pretrained(source, trust_remote_code=False))
            return proc, source
        except Exception as exc:  # noqa: BLE001
            _logger.info("no image processor loaded from '%s' (%s); using CLIP defaults", source, exc)
    size = model.config.vision_config.image_size
    proc = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    )
    return proc, None


def lora_target_regex(towers: list[str], names: list[str]) -> str:
    """peft ``target_modules`` pattern: the named modules inside the chosen towers only."""
    tower_re = "|".join({"text": "text_model", "vision": "vision_model"}[t] for t in towers)
    names_re = "|".join(re.escape(n) for n in names)
    return rf"(?:.*\.)?(?:{tower_re})\.(?:.*\.)?(?:{names_re})"


class SafeCLIPModule(nn.Module):
    """CLIP under training plus its reference encoders; ``forward(batch)`` returns every embedding.

    ``towers`` lists the towers being trained (``["text"]``, ``["vision"]`` or both). The
    output holds trained embeddings only for trained towers; for an untrained tower the
    reference embeddings stand in (the loss then drops the terms with nothing to train).
    """

    def __init__(
        self,
        clip: Any,
        *,
        towers: list[str],
        finetune: str = "lora",
        lora_r: int = 16,
        lora_alpha: float = 1.0,
        lora_dropout: float = 0.1,
        lora_target_modules: list[str] | None = None,
        reference: str = "frozen",
        loss_config: LossConfig | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if not towers or any(t not in ("text", "vision") for t in towers):
            raise ValueError(f"towers must be a non-empty subset of text, vision, got {towers}")
        self.towers = list(towers)
        self.finetune = finetune
        self.reference_mode = reference
        self.loss_config = loss_config or LossConfig()
        clip.requires_grad_(False)
        if gradient_checkpointing:
            clip.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if finetune == "lora":
            lora = LoraConfig(
                r=lora_r,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                bias="none",
                target_modules=lora_target_regex(self.towers, lora_target_modules or ["k_proj", "v_proj"]),
            )
            self.net = get_peft_model(clip, lora)
            self.frozen_copy = None
        elif finetune == "full":
            self.net = clip
            for name, param in clip.named_parameters():
                if any(name.startswith(p) for t in self.towers for p in TOWER_PREFIXES[t]):
                    param.requires_grad_(True)
            self.frozen_copy = copy.deepcopy(clip).requires_grad_(False).eval() if reference == "frozen" else None
        else:
            raise ValueError(f"finetune must be 'lora' or 'full', got {finetune!r}")

    # -- access

    @property
    def clip(self) -> Any:
        """The underlying transformers CLIPModel (LoRA layers injected in place when LoRA)."""
        return self.net.get_base_model() if self.finetune == "lora" else self.net

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained tensors only (LoRA adapters or tower weights), under stable names."""
        return {n: p.detach() for n, p in self.net.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.net.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint does not fit this model: {len(missing)} missing (e.g. {missing[:2]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); was it trained with the same towers/finetune?"
            )
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].dtype))

    def merged_clip(self) -> Any:
        """A plain CLIPModel with the training merged in (a copy; this module is unchanged)."""
        if self.finetune == "lora":
            return copy.deepcopy(self.net).merge_and_unload().eval()
        return copy.deepcopy(self.net).eval()

    # -- encoding

    @contextlib.contextmanager
    def reference_encoders(self):
        """Yield the CLIPModel that acts as T0/V0 (no grad)."""
        with torch.no_grad():
            if self.reference_mode == "detached":
                yield self.clip
            elif self.finetune == "lora":
                with self.net.disable_adapter():
                    yield self.clip
            else:
                yield self.frozen_copy

    def encode_text(
        self, clip: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Projected text embedding (B, D) and, if asked, the token states (B, L, H) of the chosen layer."""
        layer = self.loss_config.text_hidden_layer
        if tokens and self.loss_config.text_tokens_padding:
            # Stable Diffusion encodes prompts with no attention mask: padding states then attend to
            # earlier padding. Causal attention leaves the real tokens and the pooled end token unchanged.
            attention_mask = None
        out = clip.text_model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=tokens and layer != -1
        )
        emb = clip.text_projection(out.pooler_output)  # (B, D)
        if not tokens:
            return emb, None
        states = out.last_hidden_state if layer == -1 else out.hidden_states[layer]  # (B, L, H)
        return emb, states

    def encode_image(
        self, clip: Any, pixel_values: torch.Tensor, tokens: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Projected image embedding (B, D) and, if asked, the patch tokens (B, N, H) of the chosen layer."""
        out = clip.vision_model(pixel_values=pixel_values, output_hidden_states=tokens)
        emb = clip.visual_projection(out.pooler_output)  # (B, D)
        if not tokens:
            return emb, None
        return emb, out.hidden_states[self.loss_config.vision_hidden_layer][:, 1:]  # (B, N, H): CLS dropped

    def encode_reference(self, batch: dict[str, torch.Tensor], *, tokens: bool = False) -> dict[str, torch.Tensor]:
        """T0(t) and V0(v) (and their token states when asked) for the safe inputs of a batch."""
        out = {}
        want_text_tokens = tokens and self.loss_config.uses_text_tokens
        want_image_tokens = tokens and self.loss_config.uses_vision_tokens
        with self.reference_encoders() as ref:
            out["ref_text"], tt = self.encode_text(
                ref, batch["safe_input_ids"], batch["safe_attention_mask"], want_text_tokens
            )
            if tt is not None:
                out["ref_text_tokens"] = tt
            if "safe_image_pixels" in batch:
                out["ref_image"], it = self.encode_image(ref, batch["safe_image_pixels"], want_image_tokens)
                if it is not None:
                    out["ref_image_tokens"] = it
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every input SafeCLIPLoss needs for this batch, as a dict of its keyword arguments.

        Reference embeddings already in the batch (``ref_text``/``ref_image``, from the
        cache) are used as they are; token-level references are always computed.
        """
        cfg = self.loss_config
        train_text, train_vision = "text" in self.towers, "vision" in self.towers
        text_tokens = train_text and cfg.uses_text_tokens
        image_tokens = train_vision and cfg.uses_vision_tokens and "safe_image_pixels" in batch
        out: dict[str, torch.Tensor] = {}
        need_ref = (
            "ref_text" not in batch
            or ("safe_image_pixels" in batch and "ref_image" not in batch)
            or text_tokens
            or image_tokens
        )
        if need_ref:
            out.update(self.encode_reference(batch, tokens=text_tokens or image_tokens))
        for key in ("ref_text", "ref_image"):
            if key in batch:
                out[key] = batch[key]  # cached (B, D)
        clip = self.clip
        if train_text:
            out["safe_text"], st = self.encode_text(
                clip, batch["safe_input_ids"], batch["safe_attention_mask"], text_tokens
            )
            out["unsafe_text"], ut = self.encode_text(
                clip, batch["unsafe_input_ids"], batch["unsafe_attention_mask"], text_tokens
            )
            if text_tokens:
                out["safe_text_tokens"], out["unsafe_text_tokens"] = st, ut
                out["safe_text_mask"] = batch["safe_attention_mask"]
                out["unsafe_text_mask"] = batch["unsafe_attention_mask"]
                if cfg.text_tokens_follow:
                    out["follow_index"] = suffix_alignment(
                        batch["unsafe_input_ids"],
                        batch["unsafe_attention_mask"],
                        batch["safe_input_ids"],
                        batch["safe_attention_mask"],
                    )
        if train_vision:
            if "safe_image_pixels" in batch:
                out["safe_image"], si = self.encode_image(clip, batch["safe_image_pixels"], image_tokens)
                if image_tokens:
                    out["safe_image_tokens"] = si
            if "unsafe_image_pixels" in batch:
                out["unsafe_image"], ui = self.encode_image(clip, batch["unsafe_image_pixels"], image_tokens)
                if image_tokens:
                    out["unsafe_image_tokens"] = ui
        return out


def create_module(config: TrainConfig, loaded: LoadedCLIP, *, has_images: bool) -> SafeCLIPModule:
    """Build the training module a config describes (text-only data trains the text tower only)."""
    towers = ["text", "vision"] if config.towers == "both" else [config.towers]
    if not has_images and "vision" in towers:
        if towers == ["vision"]:
            raise ConfigError("towers is 'vision' but the training data has no images")
        _logger.warning("training data has no images: training the text tower only")
        towers = ["text"]
    return SafeCLIPModule(
        loaded.model,
        towers=towers,
        finetune=config.finetune,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_target_modules=config.lora_target_modules,
        reference=config.reference,
        loss_config=config.loss,
        gradient_checkpointing=config.gradient_checkpointing,
    )
