"""open_clip -> transformers conversion: exact against open_clip's own forward, or refused.

Head width and activation change the output with identical tensor shapes, so each case
here builds a tiny open_clip model with the head width of a real architecture (64: OpenAI,
80: OpenCLIP ViT-H/14 vision, 104: bigG vision) and compares hidden states and projected
embeddings of both towers at 1e-4.
"""

from __future__ import annotations

import json

import pytest
import torch

from safegen.core.errors import SafegenError
from safegen.models.encoders import load_safe_text_encoder, load_safe_vision_encoder
from safegen.models.open_clip_convert import (
    OPEN_CLIP_CONFIG,
    arch_from_config,
    bundled_model_config,
    open_clip_to_transformers,
    transformers_to_open_clip,
)

TOL = dict(atol=1e-4, rtol=1e-4)


def _model_cfg(head_width: int, quick_gelu: bool, width: int | None = None) -> dict:
    width = width or head_width * 2
    return {
        "embed_dim": 48,
        "quick_gelu": quick_gelu,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": width, "head_width": head_width, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 1514, "width": 128, "heads": 2, "layers": 2},
    }


def _build_open_clip(cfg: dict, seed: int = 0):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=open_clip.model.CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=open_clip.model.CLIPTextCfg(**cfg["text_cfg"]),
        quick_gelu=cfg["quick_gelu"],
    )
    with torch.no_grad():  # open_clip starts some tensors at zero/identity: perturb all of them
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def _text_hidden(model, ids):
    x = model.token_embedding(ids) + model.positional_embedding
    states = [x]
    for block in model.transformer.resblocks:
        x = block(x, attn_mask=model.attn_mask)
        states.append(x)
    return states, model.ln_final(x)


def _vision_hidden(visual, pixels):
    x = visual.conv1(pixels)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    states = [x]
    for block in visual.transformer.resblocks:
        x = block(x)
        states.append(x)
    return states


def _ids():
    import open_clip

    tok = open_clip.get_tokenizer("ViT-L-14")
    ids = tok(["a red circle", "a blue square on a green background"])
    # Fit the tiny vocabulary; end-of-text stays the largest id, which is what argmax pooling needs.
    return ids.clamp(max=1513)


def _write(tmp_path, model, cfg, with_config=True):
    from safetensors.torch import save_file

    folder = tmp_path / "oc"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    if with_config:
        (folder / OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    return folder


def _assert_matches(oc, text, vision):
    ids = _ids()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want_states, want_last = _text_hidden(oc, ids)
        got = text(input_ids=ids, output_hidden_states=True)
        for got_h, want_h in zip(got.hidden_states, want_states, strict=True):
            torch.testing.assert_close(got_h, want_h, **TOL)
        torch.testing.assert_close(got.last_hidden_state, want_last, **TOL)
        torch.testing.assert_close(got.text_embeds, oc.encode_text(ids), **TOL)
        got_v = vision(pixel_values=pixels, output_hidden_states=True)
        for got_h, want_h in zip(got_v.hidden_states, _vision_hidden(oc.visual, pixels), strict=True):
            torch.testing.assert_close(got_h, want_h, **TOL)
        torch.testing.assert_close(got_v.image_embeds, oc.encode_image(pixels), **TOL)


@pytest.mark.parametrize(("head_width", "quick_gelu"), [(64, True), (80, False), (104, False)])
def test_conversion_matches_open_clip_forward(tmp_path, head_width, quick_gelu):
    cfg = _model_cfg(head_width, quick_gelu)
    oc = _build_open_clip(cfg)
    folder = _write(tmp_path, oc, cfg)
    text, vision = load_safe_text_encoder(folder), load_safe_vision_encoder(folder)
    assert vision.config.num_attention_heads == 2 and vision.config.hidden_size == 2 * head_width
    assert text.config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")
    _assert_matches(oc, text, vision)


def test_explicit_arguments_describe_a_bare_checkpoint(tmp_path):
    cfg = _model_cfg(80, False)
    oc = _build_open_clip(cfg)
    folder = _write(tmp_path, oc, cfg, with_config=False)
    ckpt = folder / "open_clip_model.safetensors"
    with pytest.raises(SafegenError, match=r"not an OpenAI CLIP.*--base"):
        load_safe_text_encoder(ckpt)
    kw = dict(head_width=80, activation="gelu")
    _assert_matches(oc, load_safe_text_encoder(ckpt, **kw), load_safe_vision_encoder(ckpt, **kw))


def test_wrong_head_width_description_is_refused(tmp_path):
    cfg = _model_cfg(80, False)
    oc = _build_open_clip(cfg)
    folder = _write(tmp_path, oc, cfg, with_config=False)
    with pytest.raises(SafegenError, match="not a multiple of head width 64"):
        load_safe_vision_encoder(folder / "open_clip_model.safetensors", head_width=64, activation="gelu")


def test_bundled_model_names_give_real_head_widths_and_activations():
    vit_h = arch_from_config(bundled_model_config("ViT-H-14"), described_by="ViT-H-14")
    assert (vit_h.vision_head_width, vit_h.text_heads, vit_h.activation) == (80, 16, "gelu")
    big_g = arch_from_config(bundled_model_config("ViT-bigG-14"), described_by="ViT-bigG-14")
    assert (big_g.vision_head_width, big_g.text_heads) == (104, 20)
    openai = arch_from_config(bundled_model_config("ViT-L-14-quickgelu"), described_by="x")
    assert openai.activation == "quick_gelu"
    with pytest.raises(SafegenError, match="not an open_clip model name"):
        bundled_model_config("ViT-Nope-99")


def test_model_name_is_used_through_base(tmp_path, monkeypatch):
    """--base NAME on a bare checkpoint reads the bundled config (patched here to a tiny 104-wide one)."""
    import open_clip

    cfg = _model_cfg(104, False)
    oc = _build_open_clip(cfg)
    folder = _write(tmp_path, oc, cfg, with_config=False)
    monkeypatch.setattr(open_clip, "get_model_config", lambda name: cfg if name == "Tiny-104" else None)
    ckpt = folder / "open_clip_model.safetensors"
    _assert_matches(oc, load_safe_text_encoder(ckpt, base="Tiny-104"), load_safe_vision_encoder(ckpt, base="Tiny-104"))


def test_unsupported_open_clip_features_are_refused():
    cfg = _model_cfg(64, True)
    cfg["text_cfg"]["hf_model_name"] = "roberta-base"
    with pytest.raises(SafegenError, match="hf_model_name"):
        arch_from_config(cfg, described_by="cfg")


def test_transformers_to_open_clip_round_trip():
    import open_clip

    cfg = _model_cfg(80, False)
    oc = _build_open_clip(cfg)
    converted = open_clip_to_transformers(oc.state_dict(), config=cfg)
    sd, back_cfg = transformers_to_open_clip(converted)
    rebuilt = open_clip.model.CLIP(
        embed_dim=back_cfg["embed_dim"],
        vision_cfg=open_clip.model.CLIPVisionCfg(**back_cfg["vision_cfg"]),
        text_cfg=open_clip.model.CLIPTextCfg(**back_cfg["text_cfg"]),
        quick_gelu=back_cfg["quick_gelu"],
    )
    rebuilt.load_state_dict(sd, strict=True)
    rebuilt.eval()
    ids, pixels = _ids(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_text(ids), oc.encode_text(ids), atol=0, rtol=0)
        torch.testing.assert_close(rebuilt.encode_image(pixels), oc.encode_image(pixels), atol=0, rtol=0)
