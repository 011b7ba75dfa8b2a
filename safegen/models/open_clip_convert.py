"""Convert open_clip CLIP checkpoints to transformers ``CLIPModel`` without guessing.

Tensor shapes give widths, depths, patch and image size, but not two things that change
the output with identical shapes: the attention head width (OpenAI and most models use
64; OpenCLIP ViT-H/14's vision tower uses 80, bigG's 104) and the activation (OpenAI's
QuickGELU vs GELU for LAION models). Those come from what describes the model:

1. an explicit open_clip model config (``config=``) or explicit ``head_width=`` /
   ``activation=``;
2. the ``open_clip_config.json`` that open_clip hub folders carry beside the weights;
3. an open_clip model name (``model_name="ViT-H-14"``) resolved against the model
   configs bundled with the installed open_clip;
4. nothing: accepted only when the shapes are one of OpenAI's CLIP ViTs (64-wide heads,
   QuickGELU); anything else is refused with the flag to pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safegen.core.errors import SafegenError
from safegen.models.state_dict import read_checkpoint

if TYPE_CHECKING:
    import torch

OPEN_CLIP_CONFIG = "open_clip_config.json"
ACTIVATIONS = ("quick_gelu", "gelu")

# OpenAI's CLIP ViTs: (text width, text layers, vision width, vision layers, patch, image size, embed dim).
_OPENAI_VITS = {
    (512, 12, 768, 12, 32, 224, 512): "ViT-B-32",
    (512, 12, 768, 12, 16, 224, 512): "ViT-B-16",
    (768, 12, 1024, 24, 14, 224, 768): "ViT-L-14",
    (768, 12, 1024, 24, 14, 336, 768): "ViT-L-14-336",
}
_OPENAI_TEXT = {(512, 12, 512), (768, 12, 768)}  # text-only checkpoints: (width, layers, embed dim)

# open_clip options a transformers CLIP cannot express, with the value that it can.
_UNSUPPORTED = {
    "text_cfg": {
        "hf_model_name": None,
        "ls_init_value": None,
        "embed_cls": False,
        "no_causal_mask": False,
        "final_ln_after_pool": False,
        "pool_type": "argmax",
        "proj_bias": False,
        "proj_type": "linear",
        "qk_norm": False,
        "scaled_cosine_attn": False,
        "scale_heads": False,
        "scale_attn_inner": False,
        "scale_attn": False,
        "scale_fc": False,
    },
    "vision_cfg": {
        "timm_model_name": None,
        "ls_init_value": None,
        "attentional_pool": False,
        "no_ln_pre": False,
        "final_ln_after_pool": False,
        "pool_type": "tok",
        "pos_embed_type": "learnable",
        "qk_norm": False,
        "scaled_cosine_attn": False,
        "scale_heads": False,
        "scale_attn_inner": False,
        "scale_attn": False,
        "scale_fc": False,
    },
}


@dataclass
class OpenClipArch:
    """What shapes cannot tell: head widths and activation, and where they came from."""

    text_heads: int | None
    vision_head_width: int
    activation: str
    described_by: str


def bundled_model_config(model_name: str) -> dict:
    """The model config open_clip ships for ``model_name`` (e.g. ``ViT-H-14``), refused by name if unknown."""
    try:
        import open_clip
    except ImportError as exc:
        raise SafegenError(
            f"resolving the open_clip model name '{model_name}' needs open_clip (pip install open_clip_torch)"
        ) from exc
    cfg = open_clip.get_model_config(model_name)
    if not cfg:
        raise SafegenError(
            f"'{model_name}' is not an open_clip model name (see open_clip.list_models(), e.g. ViT-H-14, ViT-bigG-14)"
        )
    return dict(cfg)


def read_open_clip_config(path: str | Path) -> dict:
    """The ``model_cfg`` of an ``open_clip_config.json`` (hub layout) or a bare model config file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SafegenError(f"cannot read '{path}': {exc}; it must be open_clip's JSON model config") from exc
    cfg = data.get("model_cfg", data)
    if not isinstance(cfg, dict) or not ({"text_cfg", "vision_cfg"} & set(cfg)):
        raise SafegenError(f"'{path}' has no model_cfg with text_cfg/vision_cfg; it is not an open_clip config")
    return cfg


def arch_from_config(cfg: dict, *, described_by: str, activation: str | None = None) -> OpenClipArch:
    """Head widths and activation from an open_clip model config, refusing what transformers cannot run."""
    for part, allowed in _UNSUPPORTED.items():
        sub = cfg.get(part) or {}
        for key, ok in allowed.items():
            if key in sub and sub[key] != ok:
                raise SafegenError(
                    f"{described_by}: {part}.{key}={sub[key]!r} has no transformers CLIP equivalent; "
                    "this model cannot be converted (use it with open_clip directly)"
                )
    text, vision = cfg.get("text_cfg") or {}, cfg.get("vision_cfg") or {}
    act = activation or ("quick_gelu" if cfg.get("quick_gelu") else "gelu")
    return OpenClipArch(
        text_heads=int(text.get("heads", 8)) if text else None,
        vision_head_width=int(vision.get("head_width", 64)),
        activation=_check_activation(act, described_by),
        described_by=described_by,
    )


def _check_activation(activation: str, where: str) -> str:
    if activation not in ACTIVATIONS:
        raise SafegenError(f"{where}: activation '{activation}' unknown; use --activation quick_gelu or gelu")
    return activation


def _shape_summary(sd: dict) -> tuple:
    width = sd["token_embedding.weight"].shape[1]
    layers = _count_layers(sd, "transformer.resblocks.")
    proj = sd.get("text_projection")
    embed = proj.shape[1] if proj is not None else width
    if "visual.conv1.weight" not in sd:
        return (width, layers, embed)
    conv = sd["visual.conv1.weight"]
    grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    vlayers = _count_layers(sd, "visual.transformer.resblocks.")
    return (width, layers, conv.shape[0], vlayers, conv.shape[-1], conv.shape[-1] * grid, embed)


def resolve_arch(
    sd: dict,
    *,
    where: str,
    config: dict | None = None,
    model_name: str | None = None,
    activation: str | None = None,
    head_width: int | None = None,
) -> OpenClipArch:
    """Decide head widths and activation for a state dict, from the most explicit description available."""
    if config is not None:
        arch = arch_from_config(config, described_by=where, activation=activation)
    elif model_name:
        arch = arch_from_config(
            bundled_model_config(model_name), described_by=f"open_clip model '{model_name}'", activation=activation
        )
    elif head_width is not None and activation is not None:
        arch = OpenClipArch(None, int(head_width), _check_activation(activation, where), "explicit arguments")
    else:
        shapes = _shape_summary(sd)
        if shapes in _OPENAI_VITS or shapes in _OPENAI_TEXT:
            arch = OpenClipArch(None, 64, _check_activation(activation or "quick_gelu", where), "OpenAI CLIP shapes")
        else:
            raise SafegenError(
                f"{where}: the architecture is not described (no {OPEN_CLIP_CONFIG} beside it) and its shapes "
                f"{shapes} are not an OpenAI CLIP, so head width and activation are unknown; pass the open_clip "
                "model name with --base (e.g. --base ViT-H-14) or put its open_clip_config.json beside the file"
            )
    if head_width is not None:
        arch.vision_head_width = int(head_width)  # text heads stay 64 wide unless a config says otherwise
    return arch


def open_clip_to_transformers(
    state_dict: dict[str, torch.Tensor],
    *,
    config: dict | None = None,
    model_name: str | None = None,
    activation: str | None = None,
    head_width: int | None = None,
    where: str = "open_clip checkpoint",
) -> Any:
    """Convert an open_clip CLIP state dict to a transformers ``CLIPModel`` (both towers when present).

    ``config`` is open_clip's model config (the ``model_cfg`` of ``open_clip_config.json``),
    ``model_name`` a bundled open_clip model name; ``activation`` (quick_gelu/gelu) and
    ``head_width`` override what they say. With none of them, only OpenAI CLIP shapes are
    accepted (see the module docstring).
    """
    sd = state_dict
    # 1. Refuse what is not an open_clip CLIP; decide what shapes cannot tell (head widths, activation).
    if "token_embedding.weight" not in sd:
        raise SafegenError(
            f"{where}: not an open_clip CLIP checkpoint: no 'token_embedding.weight' (is it a transformers file?)"
        )
    arch = resolve_arch(
        sd, where=where, config=config, model_name=model_name, activation=activation, head_width=head_width
    )
    # 2. Build the transformers configs of both towers from the tensor shapes and that description.
    text_cfg = _text_config(sd, arch, where)
    vision_cfg = _vision_config(sd, arch, where, projection_dim=text_cfg["projection_dim"])
    model = _empty_clip_model(text_cfg, vision_cfg)
    # 3. Map the open_clip tensors to transformers names.
    mapped = _map_state_dict(sd, text_cfg["num_hidden_layers"], vision_cfg.get("num_hidden_layers"))
    # 4. Load them, refusing a model with any tensor left unfilled.
    _load_exactly(model, mapped, has_vision=bool(vision_cfg), where=where)
    # 5. Record the description and keep the checkpoint's dtype.
    model.safegen_open_clip_arch = arch
    return _to_checkpoint_dtype(model, sd["token_embedding.weight"].dtype)


def _text_config(sd: dict, arch: OpenClipArch, where: str) -> dict:
    """The transformers ``CLIPTextConfig`` arguments of an open_clip text tower."""
    width = sd["token_embedding.weight"].shape[1]
    text_proj = sd.get("text_projection")
    vocab = sd["token_embedding.weight"].shape[0]
    text_heads = arch.text_heads or max(1, width // 64)
    if width % text_heads:
        raise SafegenError(f"{where}: text width {width} is not divisible by {text_heads} heads")
    return dict(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=_count_layers(sd, "transformer.resblocks."),
        num_attention_heads=text_heads,
        max_position_embeddings=sd["positional_embedding"].shape[0],
        hidden_act=arch.activation,
        projection_dim=text_proj.shape[1] if text_proj is not None else width,
        # open_clip pools at argmax(token id): the end-of-text token has the largest id.
        eos_token_id=vocab - 1,
        bos_token_id=vocab - 2,
        pad_token_id=0,
    )


def _vision_config(sd: dict, arch: OpenClipArch, where: str, *, projection_dim: int) -> dict:
    """The transformers ``CLIPVisionConfig`` arguments of an open_clip vision tower; ``{}`` for text-only weights."""
    if "visual.conv1.weight" not in sd:
        return {}
    v_width = sd["visual.conv1.weight"].shape[0]
    if v_width % arch.vision_head_width:
        raise SafegenError(
            f"{where}: vision width {v_width} is not a multiple of head width {arch.vision_head_width} "
            f"({arch.described_by}); the description does not match the weights"
        )
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    return dict(
        hidden_size=v_width,
        intermediate_size=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=_count_layers(sd, "visual.transformer.resblocks."),
        num_attention_heads=v_width // arch.vision_head_width,
        image_size=patch * grid,
        patch_size=patch,
        num_channels=sd["visual.conv1.weight"].shape[1],
        hidden_act=arch.activation,
        projection_dim=projection_dim,
    )


def _empty_clip_model(text_cfg: dict, vision_cfg: dict) -> Any:
    """A freshly initialised transformers ``CLIPModel`` of those configs (no vision config: the default tower)."""
    from transformers import CLIPConfig, CLIPModel

    projection_dim = text_cfg["projection_dim"]
    return CLIPModel(CLIPConfig(text_config=text_cfg, vision_config=vision_cfg or None, projection_dim=projection_dim))


def _map_state_dict(sd: dict, text_layers: int, vision_layers: int | None) -> dict:
    """The open_clip tensors under their transformers ``CLIPModel`` names (vision ones when ``vision_layers``)."""
    out = {}
    out["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    out.update(_convert_blocks(sd, "transformer.resblocks.", "text_model.encoder.layers.", text_layers))
    out["text_model.final_layer_norm.weight"] = sd["ln_final.weight"]
    out["text_model.final_layer_norm.bias"] = sd["ln_final.bias"]
    text_proj = sd.get("text_projection")
    if text_proj is not None:
        out["text_projection.weight"] = text_proj.t().contiguous()
    if vision_layers is not None:
        out["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
        out["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
        out["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
        out["vision_model.pre_layrnorm.weight"] = sd["visual.ln_pre.weight"]
        out["vision_model.pre_layrnorm.bias"] = sd["visual.ln_pre.bias"]
        out.update(_convert_blocks(sd, "visual.transformer.resblocks.", "vision_model.encoder.layers.", vision_layers))
        out["vision_model.post_layernorm.weight"] = sd["visual.ln_post.weight"]
        out["vision_model.post_layernorm.bias"] = sd["visual.ln_post.bias"]
        out["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    if "logit_scale" in sd:
        out["logit_scale"] = sd["logit_scale"].reshape(())
    return out


def _load_exactly(model: Any, mapped: dict, *, has_vision: bool, where: str) -> None:
    """Load the mapped tensors, refusing when any model tensor stays unfilled (a text-only model skips vision)."""
    missing, _ = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if not has_vision:
        missing = [k for k in missing if not k.startswith(("vision_model.", "visual_projection"))]
    if missing:
        raise SafegenError(f"{where}: could not fill {len(missing)} tensors (first: {missing[0]})")


def _to_checkpoint_dtype(model: Any, dtype: torch.dtype) -> Any:
    """The model in the checkpoint's floating dtype (float16, bfloat16 or float32; float32 for anything else)."""
    import torch

    return model.to(dtype=dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32)


def load_open_clip_checkpoint(
    path: str | Path,
    *,
    activation: str | None = None,
    model_name: str | None = None,
    head_width: int | None = None,
    config: dict | None = None,
) -> Any:
    """Read an open_clip checkpoint file and convert it; an ``open_clip_config.json`` beside it describes it."""
    path = Path(path)
    side = path.parent / OPEN_CLIP_CONFIG
    where = f"open_clip checkpoint '{path}'"
    if config is None and model_name is None and side.is_file():
        config, where = read_open_clip_config(side), f"{where} ({side.name})"
    model = open_clip_to_transformers(
        read_checkpoint(path),
        config=config,
        model_name=model_name,
        activation=activation,
        head_width=head_width,
        where=where,
    )
    model.safegen_source = str(path)
    return model


def transformers_to_open_clip(model: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """The inverse conversion: a transformers ``CLIPModel`` as an open_clip state dict and model config.

    The config is what ``open_clip_config.json`` holds under ``model_cfg`` (head width,
    activation, sizes), so open_clip builds the same architecture without guessing.
    """
    import torch

    sd = model.state_dict()
    tc, vc = model.config.text_config, model.config.vision_config
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].t(),
        "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"],
        "visual.proj": sd["visual_projection.weight"].t(),
        "logit_scale": sd["logit_scale"].reshape(()),
    }
    for src, dst, n in (
        ("text_model.encoder.layers.", "transformer.resblocks.", tc.num_hidden_layers),
        ("vision_model.encoder.layers.", "visual.transformer.resblocks.", vc.num_hidden_layers),
    ):
        for i in range(n):
            s, d = f"{src}{i}.", f"{dst}{i}."
            out[d + "attn.in_proj_weight"] = torch.cat([sd[s + f"self_attn.{p}_proj.weight"] for p in "qkv"])
            out[d + "attn.in_proj_bias"] = torch.cat([sd[s + f"self_attn.{p}_proj.bias"] for p in "qkv"])
            for a, b in _BLOCK_PAIRS.items():
                out[d + a + ".weight"] = sd[s + b + ".weight"]
                out[d + a + ".bias"] = sd[s + b + ".bias"]
    if tc.hidden_act not in ACTIVATIONS or vc.hidden_act != tc.hidden_act:
        raise SafegenError(
            f"activation {tc.hidden_act}/{vc.hidden_act} has no open_clip equivalent (quick_gelu or gelu, both towers)"
        )
    cfg = {
        "embed_dim": int(model.config.projection_dim),
        "quick_gelu": tc.hidden_act == "quick_gelu",
        "vision_cfg": {
            "image_size": int(vc.image_size),
            "layers": int(vc.num_hidden_layers),
            "width": int(vc.hidden_size),
            "head_width": int(vc.hidden_size // vc.num_attention_heads),
            "mlp_ratio": vc.intermediate_size / vc.hidden_size,
            "patch_size": int(vc.patch_size),
        },
        "text_cfg": {
            "context_length": int(tc.max_position_embeddings),
            "vocab_size": int(tc.vocab_size),
            "width": int(tc.hidden_size),
            "heads": int(tc.num_attention_heads),
            "layers": int(tc.num_hidden_layers),
            "mlp_ratio": tc.intermediate_size / tc.hidden_size,
        },
    }
    return {k: v.detach().contiguous().clone() for k, v in out.items()}, cfg


_BLOCK_PAIRS = {
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


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
        for a, b_ in _BLOCK_PAIRS.items():
            out[d + b_ + ".weight"] = sd[s + a + ".weight"]
            out[d + b_ + ".bias"] = sd[s + a + ".bias"]
    return out
