"""Merge a peft LoRA adapter into its base CLIP exactly, or refuse.

peft's own loader matches adapter keys against the module tree of whatever class the
base was loaded as, and only warns about keys it cannot place: an adapter trained on a
``CLIPTextModel`` (transformers 5 flattens it: ``encoder.layers...``) loaded onto a
``CLIPModel`` (``text_model.encoder.layers...``) merges nothing, silently. Here every
adapter tensor is placed by name against canonical CLIP names, in either transformers
layout (4.x ``text_model.encoder...`` or 5.x ``encoder...``), and a tensor that finds no
home, or a LoRA pair with a missing half, is an error naming it. The arithmetic is
peft's: ``W += (B @ A) * scaling`` with ``scaling = alpha / r`` (``alpha / sqrt(r)`` for
rsLoRA), per-module ``rank_pattern``/``alpha_pattern`` honoured.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safegen.core.errors import SafegenError
from safegen.core.hub import load_or_explain
from safegen.models.remote_code import refuse_remote_code
from safegen.models.state_dict import TOWER_PREFIX, tower_state_dict_key

if TYPE_CHECKING:
    import torch

_PREFIX = "base_model.model."
_PROJECTION = {"text": "text_projection.", "vision": "visual_projection."}
# Module names that say which tower a flattened (transformers 5) key belongs to.
_TEXT_ONLY = ("embeddings.token_embedding", "final_layer_norm")
_VISION_ONLY = ("embeddings.patch_embedding", "embeddings.class_embedding", "pre_layrnorm", "post_layernorm")
_CLASS_TOWER = {
    "CLIPTextModel": "text",
    "CLIPTextModelWithProjection": "text",
    "CLIPVisionModel": "vision",
    "CLIPVisionModelWithProjection": "vision",
    "CLIPModel": None,
}


def merge_lora_adapter(
    adapter_dir: str | Path, *, base: str | None = None, tower: str | None = None, **hf_kwargs: Any
) -> torch.nn.Module:
    """Load the adapter's base CLIP, add every LoRA delta to it, and return the plain transformers model.

    ``base`` overrides ``base_model_name_or_path`` from ``adapter_config.json``; ``tower``
    (``text``/``vision``) is the tower the caller wants, used only to place keys that
    neither the adapter's recorded class nor their names tie to a tower.
    """
    import torch

    adapter_dir = Path(adapter_dir)
    cfg = _read_config(adapter_dir)
    base = base or cfg.get("base_model_name_or_path")
    if not base:
        raise SafegenError(
            f"LoRA adapter '{adapter_dir}' names no base model (base_model_name_or_path); pass --base (base=...)"
        )
    tensors = _read_adapter_tensors(adapter_dir)
    adapter_tower = _adapter_tower(cfg, tensors, adapter_dir, tower)
    model = _load_base(str(base), **hf_kwargs)
    targets = _canonical_names(model)
    plan = _plan(tensors, cfg, adapter_tower, targets, adapter_dir)
    params = dict(model.state_dict())
    with torch.no_grad():
        for key, action in plan.items():
            weight = params[key]
            if action[0] == "replace":
                replacement = action[1]
                if tuple(replacement.shape) != tuple(weight.shape):
                    raise SafegenError(
                        f"LoRA adapter '{adapter_dir}': '{key}' has shape {tuple(replacement.shape)}, "
                        f"base has {tuple(weight.shape)}"
                    )
                weight.copy_(replacement.to(weight.dtype))
                continue
            _, a, b, scaling, embedding = action
            delta = b.to(torch.float32) @ a.to(torch.float32) if weight.dtype != torch.float32 else b @ a
            delta = (delta.t() if embedding else delta) * scaling
            if tuple(delta.shape) != tuple(weight.shape):
                raise SafegenError(
                    f"LoRA adapter '{adapter_dir}': the delta for '{key}' has shape {tuple(delta.shape)}, "
                    f"the base '{base}' has {tuple(weight.shape)}; pass the base the adapter was trained on (--base)"
                )
            weight.add_(delta.to(weight.dtype))
    model.safegen_source = str(adapter_dir)
    return model.eval()


def adapter_towers(adapter_dir: str | Path) -> tuple[str, ...]:
    """The towers an adapter changes: one for a tower class, both for a ``CLIPModel`` (or when unrecorded)."""
    cfg = _read_config(Path(adapter_dir))
    tower = _CLASS_TOWER.get((cfg.get("auto_mapping") or {}).get("base_model_class"))
    return (tower,) if tower else ("text", "vision")


def _read_config(adapter_dir: Path) -> dict:
    path = adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SafegenError(f"cannot read '{path}': {exc}") from exc
    if cfg.get("peft_type", "LORA") != "LORA":
        raise SafegenError(f"'{path}': peft_type {cfg.get('peft_type')} is not LoRA; only LoRA adapters are merged")
    for field, ok in (("use_dora", False), ("fan_in_fan_out", False), ("lora_bias", False)):
        if cfg.get(field, ok) != ok:
            raise SafegenError(f"'{path}': {field}={cfg[field]!r} is not supported; train a plain LoRA adapter")
    if cfg.get("bias", "none") != "none":
        raise SafegenError(f"'{path}': bias={cfg['bias']!r} is not supported; train with bias='none'")
    return cfg


def _read_adapter_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        other = adapter_dir / "adapter_model.bin"
        hint = " (only a pickled adapter_model.bin is there; re-save it with safe_serialization=True)"
        raise SafegenError(
            f"LoRA adapter '{adapter_dir}' has no adapter_model.safetensors{hint if other.exists() else ''}"
        )
    from safetensors.torch import load_file

    # A garbage or truncated file is one line naming the adapter, not safetensors' own error.
    return load_or_explain(str(adapter_dir), lambda: load_file(str(path)))


def _adapter_tower(cfg: dict, tensors: dict, adapter_dir: Path, wanted: str | None) -> str | None:
    """Which tower flattened keys belong to: the recorded class, key names, or the caller's tower."""
    recorded = (cfg.get("auto_mapping") or {}).get("base_model_class")
    if recorded is not None:
        if recorded not in _CLASS_TOWER:
            raise SafegenError(
                f"LoRA adapter '{adapter_dir}' was trained on a {recorded}, not a transformers CLIP class"
            )
        return _CLASS_TOWER[recorded]
    names = [k[len(_PREFIX) :] if k.startswith(_PREFIX) else k for k in tensors]
    flat = [
        n for n in names if not n.startswith(("text_model.", "vision_model.", "text_projection", "visual_projection"))
    ]
    if not flat:
        return None
    if any(n.startswith(_TEXT_ONLY) for n in flat):
        return "text"
    if any(n.startswith(_VISION_ONLY) for n in flat):
        return "vision"
    if wanted is None:
        raise SafegenError(
            f"LoRA adapter '{adapter_dir}' does not say which CLIP tower it was trained on "
            "(no auto_mapping in adapter_config.json); load it with load_safe_text_encoder or load_safe_vision_encoder"
        )
    return wanted


def _load_base(base: str, **hf_kwargs: Any) -> Any:
    from transformers import (
        AutoConfig,
        CLIPModel,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPVisionModel,
        CLIPVisionModelWithProjection,
    )

    hf_kwargs["trust_remote_code"] = False
    config = load_or_explain(base, lambda: AutoConfig.from_pretrained(base, **hf_kwargs))
    refuse_remote_code(base, config)
    archs = set(getattr(config, "architectures", None) or [])
    if config.model_type == "clip":
        cls = CLIPModel
    elif config.model_type == "clip_text_model":
        cls = CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in archs else CLIPTextModel
    elif config.model_type == "clip_vision_model":
        cls = CLIPVisionModelWithProjection if "CLIPVisionModelWithProjection" in archs else CLIPVisionModel
    else:
        raise SafegenError(
            f"LoRA base '{base}' is a '{config.model_type}' model, not CLIP; pass a CLIP base with --base"
        )
    return load_or_explain(base, lambda: cls.from_pretrained(base, **hf_kwargs))


def _canonical_names(model: Any) -> dict[str, str]:
    """Map CLIPModel-style names (text_model..., text_projection...) to the base model's own state-dict keys."""
    keys = list(model.state_dict())
    if type(model).__name__ == "CLIPModel":
        return {k: k for k in keys}
    tower = "text" if "Text" in type(model).__name__ else "vision"
    out = {}
    for key in keys:
        canon = tower_state_dict_key(key, tower)
        if canon is None:
            continue
        name = _PROJECTION[tower] + "weight" if canon == "projection.weight" else TOWER_PREFIX[tower] + canon
        out[name] = key
    return out


def _canonical(module: str, adapter_tower: str | None) -> str:
    if module.startswith(("text_model.", "vision_model.", "text_projection", "visual_projection")):
        return module
    if adapter_tower is None:
        return module  # a CLIPModel adapter names every tower explicitly
    return TOWER_PREFIX[adapter_tower] + module


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    """peft's rule: a pattern applies when it matches the end of the module name at a dot boundary."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def _plan(tensors: dict, cfg: dict, adapter_tower: str | None, targets: dict[str, str], adapter_dir: Path) -> dict:
    pairs: dict[str, dict[str, Any]] = {}
    replaced: dict[str, Any] = {}
    unplaced: list[str] = []
    save_modules = tuple(cfg.get("modules_to_save") or ())
    for key, value in tensors.items():
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        m = re.match(r"(.+)\.(lora_A|lora_B)\.weight$", name) or re.match(
            r"(.+)\.(lora_embedding_A|lora_embedding_B)$", name
        )
        if m:
            pairs.setdefault(m.group(1), {})[m.group(2)] = value
            continue
        module, _, leaf = name.rpartition(".")
        if save_modules and any(module == s or module.endswith("." + s) for s in save_modules):
            canon = _canonical(name, adapter_tower)
            if canon in targets:
                replaced[targets[canon]] = value
                continue
        unplaced.append(key)
    plan: dict[str, tuple] = {k: ("replace", v) for k, v in replaced.items()}
    for module, halves in pairs.items():
        embedding = "lora_embedding_A" in halves or "lora_embedding_B" in halves
        a = halves.get("lora_embedding_A" if embedding else "lora_A")
        b = halves.get("lora_embedding_B" if embedding else "lora_B")
        if a is None or b is None:
            raise SafegenError(f"LoRA adapter '{adapter_dir}' has only one half of the pair for '{module}'")
        canon = _canonical(module, adapter_tower) + ".weight"
        if canon not in targets:
            unplaced.append(f"{_PREFIX}{module}")
            continue
        rank = a.shape[0]
        alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", 8))
        scaling = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
        plan[targets[canon]] = ("lora", a, b, scaling, embedding)
    if unplaced:
        raise SafegenError(
            f"LoRA adapter '{adapter_dir}' has {len(unplaced)} tensors that match nothing in the base "
            f"(first: {unplaced[0]}); pass the base CLIP it was trained on with --base"
        )
    if not plan:
        raise SafegenError(f"LoRA adapter '{adapter_dir}' holds no LoRA tensors")
    return plan
