"""Training configuration: dataclasses with help text, validation naming the field, JSON/YAML I/O.

A ``safegen-train fit`` config file is a flat YAML or JSON mapping of :class:`TrainConfig`
fields, with the loss settings nested under ``loss:`` (:class:`LossConfig`)::

    model: runs/toy/clip            # transformers CLIP folder, hub id, or open_clip checkpoint
    train_data: data/train.jsonl    # {safe_text, unsafe_text, safe_image?, unsafe_image?, tag?}
    val_data: data/val.jsonl
    output_dir: runs/safeclip
    batch_size: 16
    epochs: 50
    loss:
      vision_patch_unsafe: 0.5

Flags override file values (``--set loss.logit_scale=50``). This module imports no torch,
so ``safegen-train fit --dry-run`` stays instant.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from safegen.core.errors import SafegenError
from safegen.core.io import atomic_write_text

_logger = logging.getLogger(__name__)

LORA_DEFAULT_TARGETS = ["k_proj", "v_proj", "out_proj", "fc1", "fc2", "patch_embedding"]


class ConfigError(SafegenError):
    """A config value is missing, unknown or invalid (the message names the field, and file:line when known)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


class _ConfigMixin:
    """to_dict / save / load shared by the config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _ConfigMixin) else value
        return out

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON (atomically)."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None, lines: dict[str, int] | None = None):
        """Build from a mapping, coercing types; unknown keys are refused with a suggestion."""
        return _build(cls, data, source=source, lines=lines or {}, prefix="")

    @classmethod
    def load(cls, path: str | Path):
        """Read a JSON or YAML file (by suffix; ``.yml``/``.yaml`` need PyYAML)."""
        data, lines = read_config_file(path)
        return cls.from_dict(data, source=str(path), lines=lines)


@dataclass
class LossConfig(_ConfigMixin):
    """Weights and settings of :class:`safegen_train.losses.SafeCLIPLoss` (defaults: as released)."""

    text_safe: float = field(default=0.10, metadata=_help("Weight of term 1, T(t) -> T0(t) (1 - cos)."))
    text_unsafe: float = field(default=0.10, metadata=_help("Weight of term 2, T(t*) -> T0(t) (1 - cos)."))
    vision_safe: float = field(default=0.10, metadata=_help("Weight of term 3, V(v) -> V0(v) (1 - cos)."))
    vision_unsafe: float = field(default=0.20, metadata=_help("Weight of term 4, V(v*) -> V0(v) (1 - cos)."))
    safe_text_vs_ref_image: float = field(default=0.25, metadata=_help("Weight of term 5, T(t) vs V0(v) (InfoNCE)."))
    unsafe_text_vs_ref_image: float = field(
        default=0.25, metadata=_help("Weight of term 6, T(t*) vs V0(v) (InfoNCE).")
    )
    ref_text_vs_safe_image: float = field(default=0.25, metadata=_help("Weight of term 7, T0(t) vs V(v) (InfoNCE)."))
    ref_text_vs_unsafe_image: float = field(
        default=0.50, metadata=_help("Weight of term 8, T0(t) vs V(v*) (InfoNCE).")
    )
    logit_scale: float = field(default=100.0, metadata=_help("Fixed (not learned) logit scale of the InfoNCE terms."))
    combination: Literal["released", "sum"] = field(
        default="released",
        metadata=_help("released: sum(w*L)/sum(w)/n over present terms; sum: plain weighted sum."),
    )
    gather_negatives: bool = field(
        default=False, metadata=_help("InfoNCE negatives from every process's batch (multi-GPU), not just the local.")
    )
    vision_patch_unsafe: float = field(
        default=0.0, metadata=_help("Weight of the unsafe-image patch-token redirection (off at 0; beyond the paper).")
    )
    vision_patch_safe: float = field(
        default=0.0, metadata=_help("Weight of the safe-image patch-token preservation (off at 0; beyond the paper).")
    )
    vision_hidden_layer: int = field(
        default=-2, metadata=_help("Vision hidden_states index for the patch terms (-2: LLaVA's second-to-last).")
    )
    text_tokens_safe: float = field(
        default=0.0, metadata=_help("Weight of the safe-caption per-token preservation (off at 0; beyond the paper).")
    )
    text_tokens_padding: bool = field(
        default=False,
        metadata=_help(
            "Token terms read captions without an attention mask, as Stable Diffusion does, and the safe term "
            "holds the padding positions too (SD reads them; the causal encoder writes the prompt into them)."
        ),
    )
    text_tokens_unsafe: float = field(
        default=0.0, metadata=_help("Weight of the unsafe-caption token-set (Chamfer) redirection (off at 0).")
    )
    text_tokens_follow: float = field(
        default=0.0,
        metadata=_help(
            "Weight of the per-position redirection of the unsafe caption's tokens that follow the text it "
            "shares with its safe caption at the end, padding included (off at 0; beyond the paper)."
        ),
    )
    text_hidden_layer: int = field(
        default=-1,
        metadata=_help("Text layer for the token terms: -1 = last_hidden_state (SD 1.x), else hidden_states[i]."),
    )

    def __post_init__(self) -> None:
        _check_numbers(self, "loss.")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("float",) and value < 0:
                raise ConfigError(f"loss.{f.name} must be a number >= 0, got {value!r}")
        if self.logit_scale <= 0:
            raise ConfigError(f"loss.logit_scale must be > 0, got {self.logit_scale}")
        if self.combination not in ("released", "sum"):
            raise ConfigError(f"loss.combination must be 'released' or 'sum', got {self.combination!r}")
        if self.vision_hidden_layer == -1:
            _logger.warning("loss.vision_hidden_layer -1 is the last layer (before post_layernorm); LLaVA reads -2")

    @property
    def uses_vision_tokens(self) -> bool:
        return bool(self.vision_patch_safe or self.vision_patch_unsafe)

    @property
    def uses_text_tokens(self) -> bool:
        return bool(self.text_tokens_safe or self.text_tokens_unsafe or self.text_tokens_follow)


@dataclass
class TrainConfig(_ConfigMixin):
    """Everything ``safegen-train fit`` needs; saved beside every checkpoint and export."""

    # -- model
    model: str = field(
        default="", metadata=_help("Base CLIP: transformers CLIPModel folder or hub id, or open_clip checkpoint file.")
    )
    activation: str | None = field(
        default=None, metadata=_help("open_clip activation when nothing records it (OpenAI shapes: quick_gelu).")
    )
    tokenizer: str | None = field(
        default=None, metadata=_help("Tokenizer folder or hub id when the model source has none.")
    )
    towers: Literal["both", "text", "vision"] = field(
        default="both", metadata=_help("Towers to train; text-only data trains the text tower only.")
    )
    finetune: Literal["lora", "full"] = field(default="lora", metadata=_help("LoRA adapters (paper) or full weights."))
    lora_r: int = field(default=16, metadata=_help("LoRA rank (paper: 16)."))
    lora_alpha: float = field(default=1.0, metadata=_help("LoRA alpha (paper: 1)."))
    lora_dropout: float = field(default=0.1, metadata=_help("LoRA dropout (paper: 0.1)."))
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LORA_DEFAULT_TARGETS),
        metadata=_help("Module names given LoRA (paper: k/v/out proj, fc1, fc2, vision patch_embedding)."),
    )
    reference: Literal["frozen", "detached"] = field(
        default="frozen",
        metadata=_help(
            "frozen: the original weights (paper); detached: no-grad pass of the current model (released)."
        ),
    )
    cache_reference: bool = field(
        default=True, metadata=_help("Compute frozen reference embeddings once before training (frozen only).")
    )
    gradient_checkpointing: bool = field(default=False, metadata=_help("Recompute activations to save memory."))
    # -- data
    train_data: str = field(
        default="", metadata=_help("Training data: .jsonl, ViSU .json, or a datasets folder / hub id.")
    )
    val_data: str | None = field(default=None, metadata=_help("Validation data (same formats); none: no validation."))
    train_split: str = field(default="train", metadata=_help("Split name for datasets folders / hub ids."))
    val_split: str = field(default="validation", metadata=_help("Validation split name for datasets sources."))
    coco_root: str | None = field(
        default=None, metadata=_help("ViSU JSON: COCO root with train2017/val2017/test2017 (safe images).")
    )
    unsafe_image_root: str | None = field(
        default=None, metadata=_help("ViSU JSON: folder that nsfw_im_path is relative to.")
    )
    images: Literal["auto", "ignore"] = field(
        default="auto", metadata=_help("auto: use images when records have them; ignore: train on text only.")
    )
    allow_empty_loss_terms: bool = field(
        default=False,
        metadata=_help("Train even when enabled loss terms get no samples (e.g. no unsafe images); else refused."),
    )
    skip_bad_records: bool = field(
        default=False, metadata=_help("Drop bad records (missing images, empty text) with a warning, not an error.")
    )
    max_text_length: int | None = field(
        default=None, metadata=_help("Pad/truncate captions to this many tokens (default: the model's, 77).")
    )
    extra_unsafe_texts: str | None = field(
        default=None,
        metadata=_help(
            "Adversarial rounds: JSONL of attack-found {unsafe_text, safe_text} (safegen eval attack's "
            "adversarial_texts.jsonl) trained on as extra unsafe texts; image terms reuse the images of the "
            "training record with the same safe_text."
        ),
    )
    extra_unsafe_repeat: int = field(default=1, metadata=_help("Times each extra unsafe text is added per epoch."))
    adversarial_images_eps: float = field(
        default=0.0,
        metadata=_help(
            "Adversarial image rounds (off at 0): L-infinity bound of a PGD perturbation of unsafe images, as a "
            "fraction of the pixel range [0, 1] (8/255 = 0.0314, the image-pgd attack's default). The chosen "
            "unsafe images are perturbed against the current vision tower so that its patch tokens at "
            "loss.vision_hidden_layer match the original tower's tokens of the clean image, then trained on in "
            "place of the clean ones (needs reference: frozen and the vision tower)."
        ),
    )
    adversarial_images_steps: int = field(
        default=3, metadata=_help("PGD steps per adversarial image (step size 2.5 * eps / steps; 3-5 is typical).")
    )
    adversarial_images_fraction: float = field(
        default=1.0, metadata=_help("Share of each micro-batch's unsafe images perturbed, in (0, 1].")
    )
    adversarial_images_every: int = field(
        default=1, metadata=_help("Perturb unsafe images at every Nth optimizer step (1: every step).")
    )
    num_workers: int = field(default=0, metadata=_help("DataLoader worker processes."))
    preprocessed_cache: str | None = field(
        default=None,
        metadata=_help(
            "Folder of `safegen-train data preprocess`: images read as cached 224 px uint8 crops (identical "
            "tensors, no decoding); new or edited images are decoded as usual."
        ),
    )
    embed_batch_size: int = field(
        default=64, metadata=_help("Batch of the no-grad passes: reference cache, validation embeddings.")
    )
    # -- optimisation
    batch_size: int = field(
        default=16, metadata=_help("Global batch per optimizer step (all processes, all accumulation steps).")
    )
    grad_accum_steps: int = field(default=1, metadata=_help("Micro-batches per optimizer step (in time)."))
    epochs: int = field(default=50, metadata=_help("Maximum epochs (paper: 50)."))
    max_steps: int | None = field(default=None, metadata=_help("Stop after this many optimizer steps."))
    optimizer: Literal["adam", "adamw"] = field(default="adam", metadata=_help("Optimizer (paper: adam)."))
    lr: float = field(default=1e-3, metadata=_help("Learning rate (paper: 1e-3 with LoRA)."))
    weight_decay: float = field(default=0.0, metadata=_help("Weight decay (paper: 0)."))
    lr_schedule: Literal["constant", "cosine"] = field(default="constant", metadata=_help("Schedule after warmup."))
    warmup_steps: int = field(default=0, metadata=_help("Linear warmup steps."))
    max_grad_norm: float | None = field(default=None, metadata=_help("Clip gradient norm (paper: none)."))
    mixed_precision: Literal["no", "fp16", "bf16"] = field(default="no", metadata=_help("Autocast precision."))
    loss: LossConfig = field(default_factory=LossConfig, metadata=_help("Loss weights and options (LossConfig)."))
    seed: int = field(default=0, metadata=_help("Seed for init, data order and dropout."))
    deterministic: bool = field(default=True, metadata=_help("torch deterministic algorithms (warn-only)."))
    cpu: bool = field(default=False, metadata=_help("Train on the CPU even when a GPU is visible."))
    # -- run
    output_dir: str = field(default="runs/safeclip", metadata=_help("Run folder: checkpoints, metrics, export."))
    log_every: int = field(default=10, metadata=_help("Write a metrics line every N optimizer steps."))
    eval_every_steps: int = field(default=0, metadata=_help("Validate every N steps (0: at the end of each epoch)."))
    save_every_steps: int = field(default=500, metadata=_help("Checkpoint every N steps (0: only at the end)."))
    keep_checkpoints: int = field(default=3, metadata=_help("Step checkpoints kept (older ones deleted; best kept)."))
    patience: int = field(
        default=5, metadata=_help("Early stopping: validations without improvement of loss or recall-sum (0: off).")
    )
    resume: str | None = field(default=None, metadata=_help("Checkpoint folder to resume from, or 'latest'."))
    report_to: list[str] = field(
        default_factory=list, metadata=_help("accelerate trackers (tensorboard, wandb) in addition to metrics.jsonl.")
    )
    export_best: Literal["latest", "loss", "recall"] = field(
        default="latest",
        metadata=_help(
            "Checkpoint exported at the end: latest improvement of either (best), best val loss (best-loss) "
            "or best recall-sum (best-recall), the release's two bests."
        ),
    )
    export_on_finish: bool = field(
        default=True, metadata=_help("Write <output_dir>/model (merged CLIPModel) from the best/final weights.")
    )

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = LossConfig.from_dict(self.loss)
        _check_literals(self, "")
        _check_numbers(self, "")
        positive = ["lora_r", "batch_size", "grad_accum_steps", "epochs", "log_every", "embed_batch_size"]
        positive.append("extra_unsafe_repeat")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ["num_workers", "warmup_steps", "eval_every_steps", "save_every_steps", "patience"]:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}")
        if self.max_text_length is not None and self.max_text_length < 1:
            raise ConfigError(f"max_text_length must be >= 1 or null, got {self.max_text_length}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        if self.batch_size % self.grad_accum_steps:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be divisible by grad_accum_steps ({self.grad_accum_steps})"
            )
        if self.reference == "detached" and self.cache_reference:
            raise ConfigError(
                "cache_reference must be false with reference: detached (detached references change every step)"
            )
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules must name at least one module")
        self._check_adversarial_images()

    def _check_adversarial_images(self) -> None:
        if not 0.0 <= self.adversarial_images_eps <= 1.0:
            raise ConfigError(
                f"adversarial_images_eps must be in [0, 1] (a fraction of the pixel range; 8/255 = 0.0314), "
                f"got {self.adversarial_images_eps}"
            )
        if self.adversarial_images_every < 1:
            raise ConfigError(f"adversarial_images_every must be >= 1, got {self.adversarial_images_every}")
        if not 0.0 < self.adversarial_images_fraction <= 1.0:
            raise ConfigError(f"adversarial_images_fraction must be in (0, 1], got {self.adversarial_images_fraction}")
        if not self.adversarial_images_eps:
            return
        if self.adversarial_images_steps < 1:
            raise ConfigError(
                f"adversarial_images_steps must be >= 1 when adversarial_images_eps > 0, "
                f"got {self.adversarial_images_steps}"
            )
        if self.towers == "text":
            raise ConfigError(
                "adversarial_images_eps > 0 perturbs images for the vision tower, but towers is 'text'; "
                "set towers: both or vision, or adversarial_images_eps: 0"
            )
        if self.reference == "detached":
            raise ConfigError(
                "adversarial_images_eps > 0 needs reference: frozen (the attack matches the original tower's "
                "features, which a detached reference does not keep)"
            )

    def require_sources(self) -> None:
        """Refuse a config that cannot train (called by fit, not by --dry-run of a partial config)."""
        if not self.model:
            raise ConfigError("model is required: a CLIP folder, hub id or open_clip checkpoint (--model)")
        if not self.train_data:
            raise ConfigError("train_data is required: a .jsonl, ViSU .json or dataset folder (--train-data)")


# ----------------------------------------------------------------------------- file reading and coercion


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a JSON or YAML config; return the mapping and the line of each top-level key (1-based)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yml", ".yaml"):
        try:
            import yaml  # pyyaml: the [train] extra, needed for YAML configs only
        except ImportError as exc:  # pragma: no cover - pyyaml ships with the [train] extra
            raise ConfigError(f"reading '{path}' needs PyYAML: pip install 'safegen[train]' (or use JSON)") from exc
        try:
            data = yaml.safe_load(text)
            node = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from exc
        lines = {}
        if node is not None and hasattr(node, "value") and isinstance(node.value, list):
            for key_node, _ in node.value:
                lines[str(key_node.value)] = key_node.start_mark.line + 1
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        lines = {}
        for i, line in enumerate(text.splitlines(), 1):
            m = re.match(r'\s*"([^"]+)"\s*:', line)
            if m and m.group(1) not in lines:
                lines[m.group(1)] = i
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of field: value, got {type(data).__name__}")
    return data, lines


def parse_override(item: str) -> tuple[str, Any]:
    """'loss.logit_scale=50' -> ('loss.logit_scale', 50); values are parsed as YAML/JSON scalars or lists."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. --set lr=1e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        import yaml  # pyyaml: the [train] extra; without it a value stays the literal string

        value = yaml.safe_load(raw) if raw.strip() else None
    except Exception:  # noqa: BLE001 - a value that is not YAML stays the literal string
        value = raw
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
        value = float(value)  # YAML 1.1 reads 1e-4 as a string
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` with dotted-key overrides applied (``loss.x`` goes into the nested mapping)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for key, value in overrides.items():
        if "." in key:
            head, tail = key.split(".", 1)
            if head != "loss":
                raise ConfigError(f"override '{key}': only loss.* fields are nested")
            nested = out.get("loss")
            nested = dict(nested) if isinstance(nested, dict) else {}
            nested[tail] = value
            out["loss"] = nested
        else:
            out[key] = value
    return out


def _build(cls, data: dict[str, Any], *, source: str | None, lines: dict[str, int], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{source}:{lines[key]}: " if source and key in lines else (f"{source}: " if source else "")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}unknown field '{prefix}{key}'{hint}")
        if key == "loss" and cls is TrainConfig:
            try:
                kwargs[key] = _build(LossConfig, value or {}, source=source, lines={}, prefix="loss.")
            except ConfigError as exc:
                raise ConfigError(f"{where}{exc}") from None
            continue
        try:
            kwargs[key] = _coerce(value, hints[key])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}field '{prefix}{key}': {exc}") from None
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        field_name = msg.split(" ", 1)[0].removeprefix("loss.")
        if source and field_name in lines:
            raise ConfigError(f"{source}:{lines[field_name]}: {msg}") from None
        if source:
            raise ConfigError(f"{source}: {msg}") from None
        raise


def _coerce(value: Any, hint: Any) -> Any:
    """Coerce a parsed JSON/YAML value to a field's annotated type, or raise with what was expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        return [_coerce(v, args[0]) if args else v for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+", value.strip()):
            return int(value)
        raise ValueError(f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    return value


#: Fields a resumed run may change: how long it runs and what it writes, not what it learns.
RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "output_dir",
        "max_steps",
        "epochs",
        "log_every",
        "eval_every_steps",
        "save_every_steps",
        "keep_checkpoints",
        "patience",
        "num_workers",
        "preprocessed_cache",
        "embed_batch_size",
        "report_to",
        "export_on_finish",
        "cpu",
    }
)


def resume_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """'field: the run has X, this resume gives Y' for every field outside :data:`RESUME_MAY_CHANGE`
    where a resume's config differs from the config the run was started with."""
    a, b = _flat(saved.to_dict()), _flat(given.to_dict())
    return [
        f"{key}: the run has {a.get(key)!r}, this resume gives {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if key not in RESUME_MAY_CHANGE and a.get(key) != b.get(key)
    ]


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_numbers(obj: Any, prefix: str) -> None:
    """Every number field holds a real number of its type: NaN and infinities are refused here,
    because a comparison such as ``lr <= 0`` lets NaN through (and lr=inf trains NaN weights)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        if value is None or not ({int, float} & set(allowed)):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{prefix}{f.name} must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name} must be a finite number, got {value!r}")


def _check_literals(obj: Any, prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal and getattr(obj, f.name) not in typing.get_args(hint):
            choices = ", ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{prefix}{f.name} must be one of {choices}, got {getattr(obj, f.name)!r}")


def field_help(cls: type = TrainConfig) -> list[tuple[str, Any, str]]:
    """(name, default, help) of every field: the documentation of the config file format."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, _ConfigMixin):
            default = "{...}"
        out.append((f.name, default, f.metadata.get("help", "")))
    return out
