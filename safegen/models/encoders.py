"""Load Safe-CLIP encoders from any source and inject them into generators.

Sources understood by :func:`load_safe_text_encoder` / :func:`load_safe_vision_encoder`:

- a hub id or local folder holding a transformers ``CLIPModel`` (the released
  ``aimagelab/safeclip_*`` checkpoints), ``CLIPTextModel[WithProjection]`` or
  ``CLIPVisionModel[WithProjection]``; a ``safegen-train export`` folder is one of these;
- an open_clip checkpoint file (``.safetensors``, or ``.bin``/``.pt`` read with
  ``weights_only=True``) or open_clip hub folder, converted to the transformers layout;
  head width and activation come from its ``open_clip_config.json``, an open_clip model
  name (``base=``) or explicit arguments, and only OpenAI CLIP shapes are accepted without
  one of them (see :mod:`safegen.models.open_clip_convert`);
- a peft LoRA adapter folder (``adapter_config.json``) on top of a base CLIP, merged
  exactly (every adapter tensor consumed, see :mod:`safegen.models.lora`);
- an already-loaded ``torch.nn.Module`` (returned as it is).

Injection copies weights into the target module in place, so the target keeps its dtype,
device and any offloading hooks, and nothing else about the generator changes. Every
swap is verified: the slot then holds exactly the encoder's tensors cast to its dtype.
Folders that ship custom code (``auto_map``) are refused; nothing runs with
``trust_remote_code``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safegen.core.errors import EncoderMismatchError, SafegenError
from safegen.core.hub import load_or_explain
from safegen.core.terminal import transformers_errors_only
from safegen.models.remote_code import refuse_remote_code
from safegen.models.state_dict import PROJECTION_KEYS, tower_state_dict_key

if TYPE_CHECKING:
    import torch

_logger = logging.getLogger(__name__)

# Keys that hold the projection head in each transformers CLIP class.
_OPEN_CLIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# ----------------------------------------------------------------------------- state dicts


def tower_state_dict(module: torch.nn.Module, tower: str) -> dict[str, torch.Tensor]:
    """The weights of one CLIP tower under canonical names.

    Canonical names drop the ``text_model.``/``vision_model.`` prefix (transformers 5
    flattens ``CLIPTextModel`` but not ``CLIPModel``) and call the head ``projection.weight``.
    """
    out = {}
    for key, value in module.state_dict().items():
        canon = tower_state_dict_key(key, tower)
        if canon is not None:
            out[canon] = value
    return out


def _tower_config(module: torch.nn.Module, tower: str) -> Any:
    config = module.config
    if getattr(config, "model_type", "") == "clip":
        return config.text_config if tower == "text" else config.vision_config
    return config


def _projection_dim(module: torch.nn.Module, tower: str) -> int | None:
    sd_key = PROJECTION_KEYS[tower]
    for key, value in module.state_dict().items():
        if key == sd_key:
            return int(value.shape[0])
    return None


def _layer_count(module: torch.nn.Module, tower: str) -> int | None:
    value = getattr(_tower_config(module, tower), "num_hidden_layers", None)
    return int(value) if value is not None else None


def check_compatible(
    encoder: torch.nn.Module, target: torch.nn.Module, tower: str, *, target_name: str = "target"
) -> None:
    """Refuse an encoder whose shapes or activation do not fit the target, naming both sides.

    An encoder deeper than the target is accepted: the target is then a truncated CLIP
    (SD 2.x keeps 23 of OpenCLIP ViT-H's 24 text layers because it reads the penultimate
    layer), and its first layers plus the final layer norm are exactly that truncation.
    """
    enc_cfg, tgt_cfg = _tower_config(encoder, tower), _tower_config(target, tower)
    fields = ["hidden_size", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps"]
    fields += ["max_position_embeddings", "vocab_size"] if tower == "text" else ["image_size", "patch_size"]
    problems = []
    for name in fields:
        a, b = getattr(enc_cfg, name, None), getattr(tgt_cfg, name, None)
        if a is not None and b is not None and a != b:
            problems.append(f"{name} {a} vs {b}")
    enc_layers, tgt_layers = _layer_count(encoder, tower), _layer_count(target, tower)
    if enc_layers is not None and tgt_layers is not None and enc_layers < tgt_layers:
        problems.append(f"num_hidden_layers {enc_layers} vs {tgt_layers}")
    tgt_proj = _projection_dim(target, tower)
    if tgt_proj is not None:
        enc_proj = _projection_dim(encoder, tower)
        if enc_proj is None:
            problems.append(f"projection missing vs {tgt_proj}")
        elif enc_proj != tgt_proj:
            problems.append(f"projection_dim {enc_proj} vs {tgt_proj}")
    if problems:
        enc_name = getattr(encoder, "safegen_source", type(encoder).__name__)
        hint = "use a Safe-CLIP trained from the same CLIP as the target"
        if any(p.startswith("hidden_act") for p in problems):
            hint = "for an open_clip checkpoint pass --activation (activation=...) or --base MODEL_NAME; else " + hint
        raise EncoderMismatchError(
            f"safe {tower} encoder '{enc_name}' does not fit {target_name} ({type(target).__name__}): "
            + "; ".join(problems)
            + f" (encoder vs target); {hint}"
        )


def _layer_index(canon: str) -> int | None:
    if canon.startswith("encoder.layers."):
        return int(canon.split(".")[2])
    return None


def copy_tower_weights(
    encoder: torch.nn.Module,
    target: torch.nn.Module,
    tower: str,
    *,
    target_name: str = "target",
    allow_identical: bool = False,
) -> None:
    """Copy a tower's weights into ``target`` in place (dtype/device of the target kept), verified.

    Shapes and devices are checked before anything is written. After the copy the
    target's state dict is read afresh and every tower tensor must be the tensor written
    or equal the source tensor cast to the target's dtype (see
    :func:`verify_tower_weights`); anything else (offloaded meta weights, a module that
    hands out copies, a truncation that went wrong) raises. A swap that would leave the
    target exactly as it was (the "safe" encoder is the original CLIP) is refused before
    any write, unless ``allow_identical`` (tests and A/B tooling that compare a model
    with itself). A deeper encoder fills a truncated target with its first layers.
    """
    import torch

    check_compatible(encoder, target, tower, target_name=target_name)
    source = tower_state_dict(encoder, tower)
    canon_to_target = _canon_to_target(target, tower)
    target_sd = target.state_dict()
    depth = _layer_count(target, tower)
    # Buffers such as position_ids are recreated by transformers and may be absent in files.
    missing = sorted(k for k in set(canon_to_target) - set(source) if not k.endswith("position_ids"))
    if missing:
        raise EncoderMismatchError(
            f"safe {tower} encoder lacks {len(missing)} tensors that {target_name} has (first: {missing[0]})"
        )
    pairs = []  # (target key, slot tensor, source tensor): everything is checked before anything is written
    for canon, key in canon_to_target.items():
        if canon not in source:
            continue
        layer = _layer_index(canon)
        if layer is not None and depth is not None and layer >= depth:
            continue  # a truncated target has no such layer
        dst, src = target_sd[key], source[canon]
        if tuple(src.shape) != tuple(dst.shape):
            raise EncoderMismatchError(
                f"safe {tower} encoder tensor '{canon}' has shape {tuple(src.shape)}, "
                f"{target_name} expects {tuple(dst.shape)}"
            )
        if dst.device.type == "meta":
            raise EncoderMismatchError(
                f"{target_name} holds its weights off the module (meta tensor '{key}', sequential offload); "
                "inject the safe encoder before enabling offloading"
            )
        pairs.append((key, dst, src))
    with torch.no_grad():
        # Smallest tensors first: a real Safe-CLIP differs somewhere early, so this stops after a few
        # small comparisons; only a swap that changes nothing reads every tensor (and is then refused).
        unchanged = all(
            torch.equal(dst, src.to(device=dst.device, dtype=dst.dtype))
            for _, dst, src in sorted(pairs, key=lambda p: p[1].numel())
        )
        if unchanged and not allow_identical:
            raise EncoderMismatchError(
                f"safe {tower} encoder '{source_id(encoder)}' has exactly the weights {target_name} already had, "
                "so the swap would change nothing; pass the Safe-CLIP checkpoint, not the original CLIP "
                "(allow_identical=True permits this for tests and A/B tooling)"
            )
        written = {}
        for key, dst, src in pairs:
            dst.copy_(src.to(device=dst.device, dtype=dst.dtype))
            written[key] = dst
    verify_tower_weights(encoder, target, tower, target_name=target_name, written=written)


def _canon_to_target(target: torch.nn.Module, tower: str) -> dict[str, str]:
    out = {}
    for key in target.state_dict():
        canon = tower_state_dict_key(key, tower)
        if canon is not None:
            out[canon] = key
    return out


def verify_tower_weights(
    encoder: torch.nn.Module,
    target: torch.nn.Module,
    tower: str,
    *,
    target_name: str = "target",
    written: dict[str, torch.Tensor] | None = None,
) -> None:
    """Check that every tower tensor of ``target`` equals ``encoder``'s, cast to the target's dtype.

    The target's state dict is read afresh. ``written`` maps keys to the tensors a copy
    just wrote: a live tensor that is that very tensor (same storage, shape and dtype)
    holds what was written without reading it again; any other tensor (a hook or wrapper
    handed out a copy, weights were re-materialised) is compared value by value. Raises
    :class:`EncoderMismatchError` naming the first tensor that differs. Layers the target
    does not have (a truncated target) are not compared.
    """
    import torch

    source = tower_state_dict(encoder, tower)
    depth = _layer_count(target, tower)
    checked = 0
    for key, dst in target.state_dict().items():
        canon = tower_state_dict_key(key, tower)
        if canon is None or canon.endswith("position_ids"):
            continue
        layer = _layer_index(canon)
        if layer is not None and depth is not None and layer >= depth:
            continue
        src = source.get(canon)
        if src is None or dst.device.type == "meta":
            raise EncoderMismatchError(f"{target_name} tensor '{key}' was not replaced by the safe {tower} encoder")
        wrote = (written or {}).get(key)
        if wrote is not None and _same_tensor(wrote, dst):
            checked += 1
            continue
        with torch.no_grad():
            if not torch.equal(dst, src.to(device=dst.device, dtype=dst.dtype)):
                raise EncoderMismatchError(
                    f"{target_name} tensor '{key}' does not hold the safe {tower} encoder's weights after the swap"
                )
        checked += 1
    if checked == 0:
        raise EncoderMismatchError(f"{target_name} has no CLIP {tower} tensors to replace")


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.data_ptr() == b.data_ptr()
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.device == b.device
    )


# ----------------------------------------------------------------------------- loading


def load_safe_text_encoder(
    source: Any,
    *,
    base: str | None = None,
    activation: str | None = None,
    head_width: int | None = None,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **hf_kwargs: Any,
) -> torch.nn.Module:
    """Load a Safe-CLIP text tower from any supported source.

    Returns a transformers ``CLIPTextModelWithProjection`` when the source has a
    projection head (CLIPModel checkpoints, exports), else a ``CLIPTextModel``.
    ``base`` is the base model of a LoRA adapter (overriding the one the adapter names)
    or the open_clip model name of a bare open_clip checkpoint (e.g. ``ViT-H-14``);
    ``activation`` (``quick_gelu``/``gelu``) and ``head_width`` describe an open_clip
    checkpoint that nothing else describes. For sources that record their activation,
    a different ``activation`` is refused rather than silently applied.
    """
    return _load_tower(
        source,
        "text",
        base=base,
        activation=activation,
        head_width=head_width,
        torch_dtype=torch_dtype,
        device=device,
        **hf_kwargs,
    )


def load_safe_vision_encoder(
    source: Any,
    *,
    base: str | None = None,
    activation: str | None = None,
    head_width: int | None = None,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **hf_kwargs: Any,
) -> torch.nn.Module:
    """Load a Safe-CLIP vision tower (``CLIPVisionModelWithProjection`` or ``CLIPVisionModel``).

    Arguments as for :func:`load_safe_text_encoder`.
    """
    return _load_tower(
        source,
        "vision",
        base=base,
        activation=activation,
        head_width=head_width,
        torch_dtype=torch_dtype,
        device=device,
        **hf_kwargs,
    )


def source_id(source: Any) -> str | None:
    """A printable id for a source (hub id, path, or the id a loaded module remembers)."""
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "safegen_source", None) or type(source).__name__


def _load_tower(
    source: Any, tower: str, *, base, activation, head_width, torch_dtype, device, **hf_kwargs
) -> torch.nn.Module:
    import torch

    hf_kwargs["trust_remote_code"] = False  # never run code shipped with a model, whatever the caller passed
    if isinstance(source, torch.nn.Module):
        module = _tower_from_module(source, tower)
    elif isinstance(source, (str, Path)):
        source = str(source)
        module = _tower_from_path_or_id(
            source, tower, base=base, activation=activation, head_width=head_width, **hf_kwargs
        )
        module.safegen_source = source
    else:
        raise SafegenError(f"safe encoder must be a hub id, a path or a loaded module, got {type(source).__name__}")
    recorded = getattr(_tower_config(module, tower), "hidden_act", None)
    if activation is not None and recorded is not None and recorded != activation:
        raise SafegenError(
            f"safe {tower} encoder '{source_id(source)}' records hidden_act {recorded}; --activation {activation} "
            "contradicts it (drop --activation: it is for open_clip checkpoints that record none)"
        )
    if torch_dtype is not None or device is not None:
        module = module.to(device=device, dtype=torch_dtype)
    return module.eval()


def _tower_from_module(module: torch.nn.Module, tower: str) -> torch.nn.Module:
    """Given a loaded CLIPModel, return the tower (with projection); other modules pass through."""
    from transformers import CLIPModel

    if isinstance(module, CLIPModel):
        return _split_clip_model(module, tower)
    return module


def _split_clip_model(model: Any, tower: str) -> torch.nn.Module:
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    cfg = copy.deepcopy(model.config.text_config if tower == "text" else model.config.vision_config)
    if tower == "vision" and not any(k.startswith("vision_model.") for k in model.state_dict()):
        raise SafegenError(f"'{source_id(model)}' holds a text tower only; a vision encoder needs one with both")
    cfg.projection_dim = model.config.projection_dim
    out = (CLIPTextModelWithProjection if tower == "text" else CLIPVisionModelWithProjection)(cfg)
    missing, unexpected = out.load_state_dict(
        {k: v for k, v in model.state_dict().items() if tower_state_dict_key(k, tower) is not None}, strict=False
    )
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise SafegenError(f"CLIPModel lacks {tower} tower weights: {missing[:3]}")
    out.to(dtype=next(model.parameters()).dtype)
    if hasattr(model, "safegen_source"):
        out.safegen_source = model.safegen_source
    return out


def _tower_from_path_or_id(source: str, tower: str, *, base, activation, head_width, **hf_kwargs) -> torch.nn.Module:
    from safegen.models.open_clip_convert import OPEN_CLIP_CONFIG

    path = Path(source).expanduser()
    oc_kwargs = dict(activation=activation, model_name=base, head_width=head_width)
    if path.is_file():
        if path.suffix in _OPEN_CLIP_SUFFIXES:
            return _split_clip_model(load_open_clip_checkpoint(path, **oc_kwargs), tower)
        raise SafegenError(f"'{source}' is a file but not a checkpoint (.safetensors, .bin, .pt); pass a model folder")
    if path.is_dir():
        refuse_remote_code(path)
    if path.is_dir() and (path / "adapter_config.json").exists():
        return _tower_from_module(load_lora_merged(path, base=base, tower=tower, **hf_kwargs), tower)
    if path.is_dir() and not (path / "config.json").exists():
        ckpts = sorted(p for p in path.iterdir() if p.suffix in _OPEN_CLIP_SUFFIXES)
        # open_clip hub folders: prefer the safetensors file, described by its open_clip_config.json.
        ckpts.sort(key=lambda p: (p.suffix != ".safetensors", p.name))
        if ckpts and (len(ckpts) == 1 or (path / OPEN_CLIP_CONFIG).is_file()):
            return _split_clip_model(load_open_clip_checkpoint(ckpts[0], **oc_kwargs), tower)
        if ckpts:
            names = ", ".join(p.name for p in ckpts)
            raise SafegenError(f"folder '{source}' holds several checkpoints ({names}); pass the file to use")
        raise SafegenError(
            f"folder '{source}' has no config.json, adapter_config.json or checkpoint file; "
            "point at a safegen-train export, a transformers CLIP folder or an open_clip checkpoint"
        )
    return _load_transformers_tower(source, tower, **hf_kwargs)


def _load_transformers_tower(source: str, tower: str, **hf_kwargs) -> torch.nn.Module:
    from transformers import (
        AutoConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPVisionModel,
        CLIPVisionModelWithProjection,
    )

    config = load_or_explain(source, lambda: AutoConfig.from_pretrained(source, **hf_kwargs))
    refuse_remote_code(source, config)
    model_type = getattr(config, "model_type", "")
    archs = getattr(config, "architectures", None) or []
    if model_type == "clip":
        # A full CLIPModel: load only the tower we need (its keys and projection match).
        cls = CLIPTextModelWithProjection if tower == "text" else CLIPVisionModelWithProjection
    elif model_type == "clip_text_model" and tower == "text":
        cls = CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in archs else CLIPTextModel
    elif model_type == "clip_vision_model" and tower == "vision":
        cls = CLIPVisionModelWithProjection if "CLIPVisionModelWithProjection" in archs else CLIPVisionModel
    elif model_type in ("clip_text_model", "clip_vision_model"):
        have = "text" if model_type == "clip_text_model" else "vision"
        raise SafegenError(
            f"'{source}' holds a CLIP {have} tower only, and this command needs the {tower} tower; "
            f"export it with `safegen-train export --what {tower}` (or --what model for both)"
        )
    else:
        raise SafegenError(
            f"'{source}' holds a '{model_type or 'unknown'}' model, not a CLIP {tower} encoder "
            f"(expected model_type clip or clip_{tower}_model)"
        )
    if model_type == "clip":
        # The tower's own config may lack the model-level projection size: take it from the CLIPConfig.
        tower_cfg = copy.deepcopy(config.text_config if tower == "text" else config.vision_config)
        tower_cfg.projection_dim = config.projection_dim
        hf_kwargs.setdefault("config", tower_cfg)
        # The other tower's weights are expected leftovers: keep transformers' report of them quiet.
        with transformers_errors_only():
            return load_or_explain(source, lambda: cls.from_pretrained(source, **hf_kwargs))
    return load_or_explain(source, lambda: cls.from_pretrained(source, **hf_kwargs))


def load_lora_merged(
    adapter_dir: str | Path, *, base: str | None = None, tower: str | None = None, **hf_kwargs: Any
) -> torch.nn.Module:
    """Merge a peft LoRA adapter into its base CLIP exactly; see :func:`safegen.models.lora.merge_lora_adapter`."""
    from safegen.models.lora import merge_lora_adapter

    return merge_lora_adapter(adapter_dir, base=base, tower=tower, **hf_kwargs)


def source_towers(source: Any, **hf_kwargs: Any) -> tuple[str, ...]:
    """Which CLIP towers a source holds, read from its config without loading weights.

    ``("text", "vision")`` for a CLIPModel, an open_clip checkpoint or a CLIPModel LoRA;
    one tower for a ``safegen-train export --what text|vision`` folder or a tower LoRA.
    """
    import torch

    if isinstance(source, torch.nn.Module):
        if type(source).__name__ == "CLIPModel":
            return ("text", "vision")
        return ("vision",) if "Vision" in type(source).__name__ else ("text",)
    path = Path(str(source)).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        from safegen.models.lora import adapter_towers

        return adapter_towers(path)
    if path.is_file() or (path.is_dir() and not (path / "config.json").is_file()):
        return ("text", "vision")  # open_clip: a text-only checkpoint is refused when the vision tower is read
    from transformers import AutoConfig

    hf_kwargs["trust_remote_code"] = False
    config = load_or_explain(str(source), lambda: AutoConfig.from_pretrained(str(source), **hf_kwargs))
    refuse_remote_code(str(source), config)
    return {"clip_text_model": ("text",), "clip_vision_model": ("vision",)}.get(
        getattr(config, "model_type", ""), ("text", "vision")
    )


def load_safe_clip_model(
    source: Any,
    *,
    original: Any = None,
    base: str | None = None,
    activation: str | None = None,
    head_width: int | None = None,
    **hf_kwargs: Any,
) -> Any:
    """A Safe-CLIP as a transformers ``CLIPModel`` (both towers), for retrieval and evaluation.

    A source with both towers (CLIPModel folder or hub id, open_clip checkpoint, CLIPModel
    LoRA) is loaded as it is. A one-tower source (``safegen-train export --what text`` or
    ``--what vision``, a tower LoRA) is completed with ``original``, the CLIP it was trained
    from (hub id, folder or loaded ``CLIPModel``): its other tower stays the original's,
    which is what a one-tower Safe-CLIP means. Without ``original`` a one-tower source is
    refused in one line naming the export to make.
    """
    import torch
    from transformers import CLIPModel

    towers = source_towers(source, **hf_kwargs)
    kw = dict(base=base, activation=activation, head_width=head_width, **hf_kwargs)
    if towers == ("text", "vision"):
        if isinstance(source, CLIPModel):
            return source
        path = Path(str(source)).expanduser()
        if path.is_file() or (path.is_dir() and not (path / "config.json").is_file()):
            if (path / "adapter_config.json").is_file():
                return load_lora_merged(path, base=base, **hf_kwargs)
            ckpt = path if path.is_file() else _single_checkpoint(path)
            return load_open_clip_checkpoint(ckpt, activation=activation, model_name=base, head_width=head_width)
        hf_kwargs["trust_remote_code"] = False
        model = load_or_explain(str(source), lambda: CLIPModel.from_pretrained(str(source), **hf_kwargs))
        model.safegen_source = str(source)
        return model.eval()
    (tower,) = towers
    if original is None:
        raise SafegenError(
            f"'{source_id(source)}' holds the {tower} tower only and this needs both; pass the original CLIP it was "
            "trained from (its other tower is kept) or export both towers with `safegen-train export --what model`"
        )
    full = copy.deepcopy(original) if isinstance(original, torch.nn.Module) else load_safe_clip_model(original)
    loader = load_safe_text_encoder if tower == "text" else load_safe_vision_encoder
    copy_tower_weights(loader(source, **kw), full, tower, target_name=f"the {tower} tower of '{source_id(original)}'")
    full.safegen_source = source_id(source)
    return full.eval()


def _single_checkpoint(folder: Path) -> Path:
    ckpts = sorted(
        (p for p in folder.iterdir() if p.suffix in _OPEN_CLIP_SUFFIXES), key=lambda p: p.suffix != ".safetensors"
    )
    if not ckpts:
        raise SafegenError(
            f"folder '{folder}' has no config.json, adapter_config.json or checkpoint file; "
            "point at a safegen-train export, a transformers CLIP folder or an open_clip checkpoint"
        )
    return ckpts[0]


# ----------------------------------------------------------------------------- open_clip


def open_clip_to_transformers(state_dict: dict[str, torch.Tensor], **kwargs: Any) -> Any:
    """Convert an open_clip state dict to a transformers ``CLIPModel``; see :mod:`safegen.models.open_clip_convert`."""
    from safegen.models.open_clip_convert import open_clip_to_transformers as convert

    return convert(state_dict, **kwargs)


def load_open_clip_checkpoint(path: str | Path, **kwargs: Any) -> Any:
    """Read and convert an open_clip checkpoint file (see :mod:`safegen.models.open_clip_convert`)."""
    from safegen.models.open_clip_convert import load_open_clip_checkpoint as load

    return load(path, **kwargs)


# ----------------------------------------------------------------------------- injection


def text_encoder_slots(pipe: Any) -> list[str]:
    """Names of the CLIP text encoders a diffusers pipeline carries, in order."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    names = []
    for name in ("text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if isinstance(module, (CLIPTextModel, CLIPTextModelWithProjection)):
            names.append(name)
    return names


def inject_text_encoder(
    pipe: Any, encoder: Any, *, slot: str = "text_encoder", allow_identical: bool = False, **load_kwargs: Any
) -> Any:
    """Replace the weights of ``pipe.<slot>`` with a Safe-CLIP text encoder, in place.

    Works for any diffusers pipeline whose text encoders are transformers CLIP models
    (SD 1.x/2.x: ``text_encoder``; SDXL: ``text_encoder`` (ViT-L/14) and
    ``text_encoder_2`` (OpenCLIP bigG)). A Safe-CLIP covers only the slot whose
    architecture it matches; a mismatch is refused with both sides named. A deeper
    encoder fills a truncated slot (SD 2.x) with its first layers and final layer norm.
    The copy is verified tensor by tensor; a swap that changes nothing is refused unless
    ``allow_identical``. Returns ``pipe``.
    """
    slots = text_encoder_slots(pipe)
    if slot not in slots:
        raise SafegenError(
            f"{type(pipe).__name__} has no CLIP text encoder '{slot}' (it has: {', '.join(slots) or 'none'})"
        )
    target = getattr(pipe, slot)
    module = load_safe_text_encoder(encoder, **load_kwargs)
    copy_tower_weights(
        module, target, "text", target_name=f"{type(pipe).__name__}.{slot}", allow_identical=allow_identical
    )
    target.safegen_source = source_id(encoder)
    _logger.info("injected safe text encoder %s into %s", source_id(encoder), slot)
    return pipe


def inject_vision_encoder(
    vision_tower: Any, encoder: Any, *, allow_identical: bool = False, **load_kwargs: Any
) -> Any:
    """Replace the weights of a CLIP vision tower module (e.g. LLaVA's) with a Safe-CLIP one, verified.

    Same invariant as :func:`inject_text_encoder`: the tower ends up holding exactly the
    encoder's tensors (cast to its dtype), and a swap that changes nothing is refused
    unless ``allow_identical``.
    """
    module = load_safe_vision_encoder(encoder, **load_kwargs)
    copy_tower_weights(module, vision_tower, "vision", target_name="vision tower", allow_identical=allow_identical)
    vision_tower.safegen_source = source_id(encoder)
    return vision_tower
