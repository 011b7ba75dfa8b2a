"""Export: LoRA merged into plain transformers CLIP weights, with a model card.

``what="model"`` writes a ``CLIPModel`` folder; ``"text"`` / ``"vision"`` a
``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection`` folder. Every export has
``config.json`` + ``model.safetensors`` (never pickle), the tokenizer and/or image processor
files, ``training_config.json`` and a ``README.md`` model card with the validation table.
``transformers`` loads it with ``from_pretrained`` and ``safegen.models.encoders`` with
``load_safe_text_encoder`` / ``load_safe_vision_encoder``. The folder is written atomically and
never over a user's files (:mod:`safegen_train.export_folder`).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from safegen.models.open_clip_convert import OPEN_CLIP_CONFIG, transformers_to_open_clip
from safegen_train.checkpoint import load_checkpoint
from safegen_train.config import ConfigError, TrainConfig
from safegen_train.export_folder import check_export_target, export_directory
from safegen_train.model import create_module, load_clip
from safegen_train.validation import format_table

_logger = logging.getLogger(__name__)

EXPORT_KINDS = ("model", "text", "vision")
EXPORT_FORMATS = ("transformers", "open_clip")


def split_tower(clip: Any, tower: str) -> Any:
    """A ``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection`` holding one tower of ``clip``."""
    cfg = copy.deepcopy(clip.config.text_config if tower == "text" else clip.config.vision_config)
    cfg.projection_dim = clip.config.projection_dim
    cls = CLIPTextModelWithProjection if tower == "text" else CLIPVisionModelWithProjection
    out = cls(cfg)
    prefixes = ("text_model.", "text_projection.") if tower == "text" else ("vision_model.", "visual_projection.")
    state = {k: v for k, v in clip.state_dict().items() if k.startswith(prefixes)}
    missing, unexpected = out.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"{tower} tower split failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return out.eval()


def export_clip(
    clip: Any,
    out_dir: str | Path,
    *,
    what: str = "model",
    tokenizer: Any = None,
    image_processor: Any = None,
    config: TrainConfig | None = None,
    validation: dict[str, Any] | None = None,
    step: int | None = None,
    source_checkpoint: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a merged ``CLIPModel`` (or one tower) as a self-contained transformers folder.

    The folder is published by :func:`~safegen_train.export_folder.export_directory`: a folder
    that is not empty and was not written by an export is refused unless ``overwrite``, and no
    file the export did not write is ever deleted.
    """
    if what not in EXPORT_KINDS:
        raise ValueError(f"what must be one of {EXPORT_KINDS}, got {what!r}")
    out_dir = Path(out_dir)
    model = clip if what == "model" else split_tower(clip, what)
    with export_directory(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(str(tmp))
        if tokenizer is not None and what in ("model", "text"):
            tokenizer.save_pretrained(str(tmp))
        if image_processor is not None and what in ("model", "vision"):
            image_processor.save_pretrained(str(tmp))
        for leftover in tmp.glob("*.bin"):  # safetensors only
            leftover.unlink()
        if config is not None:
            (tmp / "training_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (tmp / "README.md").write_text(
            model_card(config, validation, what=what, step=step, source_checkpoint=source_checkpoint)
        )
    _logger.info("exported %s to %s", what, out_dir)
    return out_dir


def export_open_clip(
    clip: Any,
    out_dir: str | Path,
    *,
    image_processor: Any = None,
    config: TrainConfig | None = None,
    validation: dict[str, Any] | None = None,
    step: int | None = None,
    source_checkpoint: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a merged ``CLIPModel`` as an open_clip folder (open_clip_model.safetensors, open_clip_config.json).

    ``open_clip.create_model_and_transforms("local-dir:<folder>")`` builds it directly (head
    width and activation come from the config, nothing is guessed), and safegen's
    encoder loaders read the same folder.
    """
    state, model_cfg = transformers_to_open_clip(clip)
    mean = list(getattr(image_processor, "image_mean", None) or [0.48145466, 0.4578275, 0.40821073])
    std = list(getattr(image_processor, "image_std", None) or [0.26862954, 0.26130258, 0.27577711])
    preprocess = {"mean": mean, "std": std, "interpolation": "bicubic", "resize_mode": "shortest"}
    out_dir = Path(out_dir)
    with export_directory(out_dir, overwrite=overwrite) as tmp:
        save_file({k: v.cpu() for k, v in state.items()}, str(tmp / "open_clip_model.safetensors"))
        cfg_text = json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n"
        (tmp / OPEN_CLIP_CONFIG).write_text(cfg_text)
        if config is not None:
            (tmp / "training_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (tmp / "README.md").write_text(
            model_card(config, validation, what="open_clip", step=step, source_checkpoint=source_checkpoint)
        )
    _logger.info("exported open_clip model to %s", out_dir)
    return out_dir


def export_module(
    module: Any,
    out_dir: str | Path,
    *,
    config: TrainConfig,
    loaded: Any = None,
    what: str = "model",
    fmt: str = "transformers",
    **kwargs: Any,
) -> Path:
    """Merge a :class:`~safegen_train.model.SafeCLIPModule` and export it (``fmt``: transformers or open_clip)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {EXPORT_FORMATS}, got {fmt!r}")
    if fmt == "open_clip":
        if what != "model":
            raise ConfigError("--format open_clip writes both towers (an open_clip CLIP); use --what model with it")
        return export_open_clip(
            module.merged_clip(),
            out_dir,
            image_processor=getattr(loaded, "image_processor", None),
            config=config,
            **kwargs,
        )
    return export_clip(
        module.merged_clip(),
        out_dir,
        what=what,
        tokenizer=getattr(loaded, "tokenizer", None),
        image_processor=getattr(loaded, "image_processor", None),
        config=config,
        **kwargs,
    )


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    what: str = "model",
    model: str | None = None,
    overwrite: bool = False,
    fmt: str = "transformers",
) -> Path:
    """Rebuild the model a checkpoint was trained from, load its weights, merge and export.

    ``model`` overrides the base recorded in the checkpoint's config (a moved folder).
    A run keeps the release's two bests, ``checkpoints/best-loss`` and
    ``checkpoints/best-recall`` (``best`` is the later of them): pass the one to export.
    The model card reports that checkpoint's own validation.
    """
    check_export_target(Path(out_dir), overwrite=overwrite, source=Path(checkpoint))
    ckpt = load_checkpoint(Path(checkpoint))
    config: TrainConfig = ckpt["config"]
    if model:
        config.model = model
    loaded = load_clip(config.model, activation=config.activation, tokenizer=config.tokenizer)
    trains_vision = any(k for k in ckpt["trainable"] if "vision_model" in k or "visual_projection" in k)
    module = create_module(config, loaded, has_images=trains_vision)
    module.load_trainable_state_dict(ckpt["trainable"])
    state = ckpt["state"]
    return export_module(
        module,
        out_dir,
        config=config,
        loaded=loaded,
        what=what,
        fmt=fmt,
        validation=state.get("last_validation"),
        step=state.get("global_step"),
        source_checkpoint=str(checkpoint),
        overwrite=overwrite,
    )


def model_card(
    config: TrainConfig | None,
    validation: dict[str, Any] | None,
    *,
    what: str = "model",
    step: int | None = None,
    source_checkpoint: str | None = None,
) -> str:
    """A README.md: what the model is, how it was trained (full config), and its validation table."""
    cls = {
        "model": "CLIPModel",
        "text": "CLIPTextModelWithProjection",
        "vision": "CLIPVisionModelWithProjection",
        "open_clip": "open_clip CLIP",
    }[what]
    base = config.model if config else "unknown"
    lines = [
        "---",
        "library_name: transformers",
        "tags: [safe-clip, clip, safegen]",
        f"base_model: {base}",
        "---",
        "",
        f"# Safe-CLIP ({what}) fine-tuned from `{base}`",
        "",
        "Trained with `safegen-train` (Safe-CLIP, Poppi et al., ECCV 2024): unsafe inputs are redirected to",
        "where their safe counterparts embed, safe inputs preserved. LoRA (when used) is merged: these are",
        f"plain `{cls}` weights.",
        "",
        "```python",
        *(
            [
                "import open_clip",
                'model, _, preprocess = open_clip.create_model_and_transforms("local-dir:path/to/this/folder")',
            ]
            if what == "open_clip"
            else [f"from transformers import {cls}", f'model = {cls}.from_pretrained("path/to/this/folder")']
        ),
        "# or: safegen.models.encoders.load_safe_text_encoder(folder) / load_safe_vision_encoder(folder)",
        "```",
        "",
    ]
    if step is not None or source_checkpoint:
        lines += [f"Weights from step {step} (`{source_checkpoint}`).", ""]
    lines += ["## Validation", ""]
    if validation and validation.get("recall"):
        table = {
            g: {d: {int(k): v for k, v in r.items()} for d, r in dirs.items()}
            for g, dirs in validation["recall"].items()
        }
        lines += [format_table({"safe": table}), ""]
        if validation.get("recall_sum") is not None:
            lines += [f"Recall-sum (R@1 of S-V, S-G, U-V, both directions): {validation['recall_sum']:.1f}", ""]
    if validation and validation.get("loss"):
        loss = validation["loss"]
        lines += ["| validation loss term | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in loss.items()]
        lines += [""]
    if not validation:
        lines += ["No validation was run.", ""]
    if config is not None:
        lines += ["## Training config", "", "```json", json.dumps(config.to_dict(), indent=2), "```", ""]
    return "\n".join(lines)
