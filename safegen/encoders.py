"""Load Safe-CLIP encoders from any source and inject them into generators.

Sources understood by :func:`load_safe_text_encoder` / :func:`load_safe_vision_encoder`:

- a hub id or local folder holding a transformers ``CLIPModel`` (the released
  ``aimagelab/safeclip_*`` checkpoints), ``CLIPTextModel[WithProjection]`` or
  ``CLIPVisionModel[WithProjection]``; a ``safegen-train export`` folder is one of these;
- an open_clip checkpoint file (``.safetensors``, or ``.bin``/``.pt`` read with
  ``weights_only=True``), converted to the transformers layout; the architecture is read
  off the tensor shapes, the activation is ``quick_gelu`` unless told otherwise (OpenAI's
  ViT-L/14, which Safe-CLIP fine-tunes, uses QuickGELU);
- a peft LoRA adapter folder (``adapter_config.json``) on top of a base CLIP, merged;
- an already-loaded ``torch.nn.Module`` (returned as it is).

Injection copies weights into the target module in place, so the target keeps its dtype,
device and any offloading hooks, and nothing else about the generator changes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._hub import load_or_explain
from .errors import EncoderMismatchError, SafegenError

if TYPE_CHECKING:
    import torch

_logger = logging.getLogger(__name__)

# Keys that hold the projection head in each transformers CLIP class.
_PROJECTION_KEYS = {"text": "text_projection.weight", "vision": "visual_projection.weight"}
_TOWER_PREFIX = {"text": "text_model.", "vision": "vision_model."}
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
    sd_key = _PROJECTION_KEYS[tower]
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
            hint = "pass --activation (activation=...) matching the CLIP the encoder was trained from, or " + hint
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

    After the copy every tensor of the target's tower is read back and must equal the
    source tensor cast to the target's dtype; anything else (offloaded meta weights, a
    hook that swallowed the write, a truncation that went wrong) raises. A copy that
    leaves the target exactly as it was (the "safe" encoder is the original CLIP) is an
    error too, unless ``allow_identical`` (tests and A/B tooling that compare a model
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
    unchanged = True
    with torch.no_grad():
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
            cast = src.to(device=dst.device, dtype=dst.dtype)
            if unchanged and not torch.equal(dst, cast):
                unchanged = False
            dst.copy_(cast)
    verify_tower_weights(encoder, target, tower, target_name=target_name)
    if unchanged and not allow_identical:
        raise EncoderMismatchError(
            f"safe {tower} encoder '{source_id(encoder)}' has exactly the weights {target_name} already had, "
            "so the swap would change nothing; pass the Safe-CLIP checkpoint, not the original CLIP "
            "(allow_identical=True permits this for tests and A/B tooling)"
        )


def _canon_to_target(target: torch.nn.Module, tower: str) -> dict[str, str]:
    out = {}
    for key in target.state_dict():
        canon = tower_state_dict_key(key, tower)
        if canon is not None:
            out[canon] = key
    return out


def verify_tower_weights(
    encoder: torch.nn.Module, target: torch.nn.Module, tower: str, *, target_name: str = "target"
) -> None:
    """Check that every tower tensor of ``target`` equals ``encoder``'s, cast to the target's dtype.

    Raises :class:`EncoderMismatchError` naming the first tensor that differs. Layers the
    target does not have (a truncated target) are not compared.
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
        with torch.no_grad():
            if not torch.equal(dst, src.to(device=dst.device, dtype=dst.dtype)):
                raise EncoderMismatchError(
                    f"{target_name} tensor '{key}' does not hold the safe {tower} encoder's weights after the swap"
                )
        checked += 1
    if checked == 0:
        raise EncoderMismatchError(f"{target_name} has no CLIP {tower} tensors to replace")


def tower_state_dict_key(key: str, tower: str) -> str | None:
    """Canonical name of one state-dict key of a CLIP tower module (None: not part of the tower)."""
    prefix, proj_key = _TOWER_PREFIX[tower], _PROJECTION_KEYS[tower]
    if key == proj_key:
        return "projection.weight"
    if key.startswith(prefix):
        return key[len(prefix) :]
    if key.startswith(("embeddings.", "encoder.", "final_layer_norm.", "pre_layrnorm.", "post_layernorm.")):
        return key
    return None


# ----------------------------------------------------------------------------- loading


def load_safe_text_encoder(
    source: Any,
    *,
    base: str | None = None,
    activation: str | None = None,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **hf_kwargs: Any,
) -> torch.nn.Module:
    """Load a Safe-CLIP text tower from any supported source.

    Returns a transformers ``CLIPTextModelWithProjection`` when the source has a
    projection head (CLIPModel checkpoints, exports), else a ``CLIPTextModel``.
    ``base`` overrides the base model named by a LoRA adapter; ``activation`` the
    activation of an open_clip checkpoint.
    """
    return _load_tower(
        source, "text", base=base, activation=activation, torch_dtype=torch_dtype, device=device, **hf_kwargs
    )


def load_safe_vision_encoder(
    source: Any,
    *,
    base: str | None = None,
    activation: str | None = None,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **hf_kwargs: Any,
) -> torch.nn.Module:
    """Load a Safe-CLIP vision tower (``CLIPVisionModelWithProjection`` or ``CLIPVisionModel``)."""
    return _load_tower(
        source, "vision", base=base, activation=activation, torch_dtype=torch_dtype, device=device, **hf_kwargs
    )


def source_id(source: Any) -> str | None:
    """A printable id for a source (hub id, path, or the id a loaded module remembers)."""
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "safegen_source", None) or type(source).__name__


def _load_tower(source: Any, tower: str, *, base, activation, torch_dtype, device, **hf_kwargs) -> torch.nn.Module:
    import torch

    if isinstance(source, torch.nn.Module):
        module = _tower_from_module(source, tower)
    elif isinstance(source, (str, Path)):
        source = str(source)
        module = _tower_from_path_or_id(source, tower, base=base, activation=activation, **hf_kwargs)
        module.safegen_source = source
    else:
        raise SafegenError(f"safe encoder must be a hub id, a path or a loaded module, got {type(source).__name__}")
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


def _tower_from_path_or_id(source: str, tower: str, *, base, activation, **hf_kwargs) -> torch.nn.Module:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix in _OPEN_CLIP_SUFFIXES:
            model = load_open_clip_checkpoint(path, activation=activation)
            return _split_clip_model(model, tower)
        raise SafegenError(f"'{source}' is a file but not a checkpoint (.safetensors, .bin, .pt); pass a model folder")
    if path.is_dir() and (path / "adapter_config.json").exists():
        return _tower_from_module(load_lora_merged(path, base=base, **hf_kwargs), tower)
    if path.is_dir() and not (path / "config.json").exists():
        ckpts = sorted(p for p in path.iterdir() if p.suffix in _OPEN_CLIP_SUFFIXES)
        if ckpts:
            return _split_clip_model(load_open_clip_checkpoint(ckpts[0], activation=activation), tower)
        raise SafegenError(f"folder '{source}' has no config.json, adapter_config.json or checkpoint file")
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
    model_type = getattr(config, "model_type", "")
    archs = getattr(config, "architectures", None) or []
    if model_type == "clip":
        # A full CLIPModel: load only the tower we need (its keys and projection match).
        cls = CLIPTextModelWithProjection if tower == "text" else CLIPVisionModelWithProjection
    elif model_type == "clip_text_model" and tower == "text":
        cls = CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in archs else CLIPTextModel
    elif model_type == "clip_vision_model" and tower == "vision":
        cls = CLIPVisionModelWithProjection if "CLIPVisionModelWithProjection" in archs else CLIPVisionModel
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
        with _quiet_transformers():
            return load_or_explain(source, lambda: cls.from_pretrained(source, **hf_kwargs))
    return load_or_explain(source, lambda: cls.from_pretrained(source, **hf_kwargs))


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_lora_merged(adapter_dir: str | Path, *, base: str | None = None, **hf_kwargs) -> torch.nn.Module:
    """Merge a peft LoRA adapter into its base CLIP and return the plain transformers model."""
    from peft import PeftModel
    from transformers import AutoConfig, CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = base or cfg.get("base_model_name_or_path")
    if not base:
        raise SafegenError(f"LoRA adapter '{adapter_dir}' names no base model; pass base=... (--base on the CLI)")
    base_cfg = load_or_explain(base, lambda: AutoConfig.from_pretrained(base, **hf_kwargs))
    cls = {
        "clip": CLIPModel,
        "clip_text_model": CLIPTextModelWithProjection,
        "clip_vision_model": CLIPVisionModelWithProjection,
    }.get(base_cfg.model_type)
    if cls is None:
        raise SafegenError(f"LoRA base '{base}' is a '{base_cfg.model_type}' model, not CLIP")
    base_model = load_or_explain(base, lambda: cls.from_pretrained(base, **hf_kwargs))
    merged = PeftModel.from_pretrained(base_model, str(adapter_dir)).merge_and_unload()
    merged.safegen_source = str(adapter_dir)
    return merged


# ----------------------------------------------------------------------------- open_clip


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling arbitrary objects."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses pickles carrying code: say so plainly
            raise SafegenError(
                f"cannot read '{path}' safely ({type(exc).__name__}); convert it to safetensors"
            ) from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    # Checkpoints saved from DDP carry a "module." prefix.
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}


def open_clip_to_transformers(state_dict: dict[str, torch.Tensor], *, activation: str = "quick_gelu") -> Any:
    """Convert an open_clip CLIP state dict to a transformers ``CLIPModel`` (both towers when present).

    The architecture is read off tensor shapes (heads assume open_clip's 64-wide heads).
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    sd = state_dict
    if "token_embedding.weight" not in sd:
        raise SafegenError(
            "not an open_clip CLIP checkpoint: no 'token_embedding.weight' (is it a transformers file?)"
        )
    width = sd["token_embedding.weight"].shape[1]
    t_layers = _count_layers(sd, "transformer.resblocks.")
    text_proj = sd.get("text_projection")
    embed_dim = text_proj.shape[1] if text_proj is not None else width
    vocab = sd["token_embedding.weight"].shape[0]
    text_cfg = dict(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=t_layers,
        num_attention_heads=max(1, width // 64),
        max_position_embeddings=sd["positional_embedding"].shape[0],
        hidden_act=activation,
        projection_dim=embed_dim,
        # open_clip pools at argmax(token id): the end-of-text token has the largest id.
        eos_token_id=vocab - 1,
        bos_token_id=vocab - 2,
        pad_token_id=0,
    )
    has_vision = "visual.conv1.weight" in sd
    vision_cfg = {}
    if has_vision:
        v_width = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
        vision_cfg = dict(
            hidden_size=v_width,
            intermediate_size=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            num_hidden_layers=_count_layers(sd, "visual.transformer.resblocks."),
            num_attention_heads=max(1, v_width // 64),
            image_size=patch * grid,
            patch_size=patch,
            num_channels=sd["visual.conv1.weight"].shape[1],
            hidden_act=activation,
            projection_dim=embed_dim,
        )
    config = CLIPConfig(text_config=text_cfg, vision_config=vision_cfg or None, projection_dim=embed_dim)
    model = CLIPModel(config)
    out = {}
    out["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    out.update(_convert_blocks(sd, "transformer.resblocks.", "text_model.encoder.layers.", t_layers))
    out["text_model.final_layer_norm.weight"] = sd["ln_final.weight"]
    out["text_model.final_layer_norm.bias"] = sd["ln_final.bias"]
    if text_proj is not None:
        out["text_projection.weight"] = text_proj.t().contiguous()
    if has_vision:
        out["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
        out["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
        out["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
        out["vision_model.pre_layrnorm.weight"] = sd["visual.ln_pre.weight"]
        out["vision_model.pre_layrnorm.bias"] = sd["visual.ln_pre.bias"]
        out.update(
            _convert_blocks(
                sd, "visual.transformer.resblocks.", "vision_model.encoder.layers.", vision_cfg["num_hidden_layers"]
            )
        )
        out["vision_model.post_layernorm.weight"] = sd["visual.ln_post.weight"]
        out["vision_model.post_layernorm.bias"] = sd["visual.ln_post.bias"]
        out["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    if "logit_scale" in sd:
        out["logit_scale"] = sd["logit_scale"].reshape(())
    missing, _ = model.load_state_dict(out, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if not has_vision:
        missing = [k for k in missing if not k.startswith(("vision_model.", "visual_projection"))]
    if missing:
        raise SafegenError(f"open_clip checkpoint could not fill {len(missing)} tensors (first: {missing[0]})")
    dtype = sd["token_embedding.weight"].dtype
    return model.to(dtype=dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32)


def load_open_clip_checkpoint(path: str | Path, *, activation: str | None = None) -> Any:
    """Read an open_clip checkpoint file and convert it to a transformers ``CLIPModel``."""
    model = open_clip_to_transformers(read_checkpoint(path), activation=activation or "quick_gelu")
    model.safegen_source = str(path)
    return model


def _count_layers(sd: dict, prefix: str) -> int:
    idx = {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def _convert_blocks(sd: dict, src: str, dst: str, n: int) -> dict:
    out = {}
    for i in range(n):
        s, d = f"{src}{i}.", f"{dst}{i}."
        q, k, v = sd[s + "attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = sd[s + "attn.in_proj_bias"].chunk(3, dim=0)
        for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            out[d + f"self_attn.{name}.weight"] = w
            out[d + f"self_attn.{name}.bias"] = b
        pairs = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for a, b_ in pairs.items():
            out[d + b_ + ".weight"] = sd[s + a + ".weight"]
            out[d + b_ + ".bias"] = sd[s + a + ".bias"]
    return out


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
