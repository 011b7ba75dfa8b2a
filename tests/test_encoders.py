"""Loading Safe-CLIP encoders from every supported source, and refusing what does not fit."""

from __future__ import annotations

import json

import pytest
import torch

from safegen.core.errors import EncoderMismatchError, MissingWeightsError, SafegenError
from safegen.models.encoders import (
    check_compatible,
    load_safe_text_encoder,
    load_safe_vision_encoder,
    open_clip_to_transformers,
    tower_state_dict,
)
from safegen.testing import tiny_clip_model, tiny_clip_text_config, tiny_tokenizer


def _ids(texts=("a red circle", "a blue square on a green background")):
    return tiny_tokenizer()(list(texts), padding="max_length", max_length=77, return_tensors="pt").input_ids


def test_clip_model_folder_gives_text_and_vision_towers(tiny_clip_dir):
    ref = tiny_clip_model(seed=5)
    text = load_safe_text_encoder(tiny_clip_dir)
    vision = load_safe_vision_encoder(tiny_clip_dir)
    ids = _ids()
    with torch.no_grad():
        want = ref.get_text_features(input_ids=ids)
        want = want.pooler_output if hasattr(want, "pooler_output") else want
        got = text(input_ids=ids).text_embeds
        pixels = torch.randn(2, 3, 32, 32)
        want_img = ref.get_image_features(pixel_values=pixels)
        want_img = want_img.pooler_output if hasattr(want_img, "pooler_output") else want_img
        got_img = vision(pixel_values=pixels).image_embeds
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_img, want_img)
    assert text.safegen_source == str(tiny_clip_dir)


def test_text_model_folder_and_loaded_module(tmp_path):
    from transformers import CLIPTextModel

    torch.manual_seed(1)
    model = CLIPTextModel(tiny_clip_text_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = load_safe_text_encoder(tmp_path)
    assert type(loaded).__name__ == "CLIPTextModel"
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state)
    assert load_safe_text_encoder(model) is model


def _tiny_open_clip(seed=0):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=48,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=2, width=128, patch_size=8, image_size=32, head_width=64),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=1514, width=128, heads=2, layers=2),
        quick_gelu=True,
    )
    # open_clip initialises some weights to zero/identity; randomise everything so the
    # comparison exercises every tensor.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def _describe(folder):
    """Write the open_clip_config.json that open_clip hub folders carry (these shapes are not OpenAI's)."""
    cfg = {
        "embed_dim": 48,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "head_width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 1514, "width": 128, "heads": 2, "layers": 2},
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))


def _open_clip_tokens(model, ids):
    x = model.token_embedding(ids) + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    return model.ln_final(x)


def test_open_clip_conversion_matches_per_token_outputs(tmp_path):
    from safetensors.torch import save_file

    oc = _tiny_open_clip()
    ckpt = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in oc.state_dict().items()}, str(ckpt))
    _describe(tmp_path)
    text = load_safe_text_encoder(ckpt)
    vision = load_safe_vision_encoder(ckpt)
    ids = _ids()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = text(input_ids=ids)
        torch.testing.assert_close(got.last_hidden_state, _open_clip_tokens(oc, ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.text_embeds, oc.encode_text(ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            vision(pixel_values=pixels).image_embeds, oc.encode_image(pixels), atol=1e-5, rtol=1e-5
        )
    assert text.config.hidden_act == "quick_gelu"


def test_open_clip_bin_is_read_without_unpickling_code(tmp_path):
    oc = _tiny_open_clip()
    good = tmp_path / "ok.bin"
    torch.save(oc.state_dict(), good)
    _describe(tmp_path)
    assert load_safe_text_encoder(good).config.hidden_size == 128

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.bin"
    torch.save({"token_embedding.weight": torch.zeros(1), "x": Evil()}, bad)
    with pytest.raises(SafegenError, match="safely"):
        load_safe_text_encoder(bad)


def test_open_clip_rejects_non_open_clip_state_dict():
    with pytest.raises(SafegenError, match="token_embedding"):
        open_clip_to_transformers({"foo": torch.zeros(1)})


def test_lora_adapter_is_merged(tmp_path):
    from peft import LoraConfig, get_peft_model

    base_dir = tmp_path / "base"
    base = tiny_clip_model(seed=3)
    base.save_pretrained(base_dir)
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=["k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    peft_model = get_peft_model(tiny_clip_model(seed=3), cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)  # B starts at zero: make the adapter do something
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(tmp_path / "adapter")
    cfg_json = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg_json["base_model_name_or_path"] == str(base_dir)

    loaded = load_safe_text_encoder(tmp_path / "adapter")
    ids = _ids()
    with torch.no_grad():
        want = peft_model.merge_and_unload().get_text_features(input_ids=ids)
        want = want.pooler_output if hasattr(want, "pooler_output") else want
        base_out = base.get_text_features(input_ids=ids)
        base_out = base_out.pooler_output if hasattr(base_out, "pooler_output") else base_out
        got = loaded(input_ids=ids).text_embeds
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, base_out)


def test_mismatch_names_both_sides():
    from transformers import CLIPTextModel

    wide = CLIPTextModel(tiny_clip_text_config(seed_hidden=48))
    narrow = CLIPTextModel(tiny_clip_text_config())
    with pytest.raises(EncoderMismatchError, match=r"hidden_size 48 vs 32"):
        check_compatible(wide, narrow, "text", target_name="pipe.text_encoder")
    gelu = CLIPTextModel(tiny_clip_text_config(hidden_act="gelu"))
    with pytest.raises(EncoderMismatchError, match="hidden_act gelu vs quick_gelu"):
        check_compatible(gelu, narrow, "text")


def test_missing_hub_id_offline_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as info:
        load_safe_text_encoder("aimagelab/safeclip_vit-l_14")
    msg = str(info.value)
    assert "aimagelab/safeclip_vit-l_14" in msg and "hf download" in msg and "\n" not in msg


def test_tower_state_dict_is_canonical_across_classes():
    from transformers import CLIPTextModelWithProjection

    clip = tiny_clip_model(seed=2)
    text = tower_state_dict(clip, "text")
    assert "projection.weight" in text and "embeddings.token_embedding.weight" in text
    assert not any(k.startswith(("vision_model", "text_model", "logit")) for k in text)
    with_proj = CLIPTextModelWithProjection(tiny_clip_text_config())
    assert set(tower_state_dict(with_proj, "text")) - {"embeddings.position_ids"} == set(text) - {
        "embeddings.position_ids"
    }


# ----------------------------------------------------------------------------- the swap invariant


def test_swap_holds_exactly_the_source_tensors_cast_to_the_slot_dtype():
    from transformers import CLIPTextModel

    from safegen.models.encoders import copy_tower_weights

    clip = tiny_clip_model(seed=11)
    slot = CLIPTextModel(tiny_clip_text_config()).to(torch.bfloat16)
    copy_tower_weights(clip, slot, "text")
    source = tower_state_dict(clip, "text")
    for key, value in tower_state_dict(slot, "text").items():
        assert value.dtype == torch.bfloat16
        assert torch.equal(value, source[key].to(torch.bfloat16)), key


def test_swap_that_changes_nothing_is_refused_unless_allowed():
    from transformers import CLIPTextModel

    from safegen.models.encoders import copy_tower_weights

    clip = tiny_clip_model(seed=11)
    slot = CLIPTextModel(tiny_clip_text_config())
    copy_tower_weights(clip, slot, "text")
    with pytest.raises(EncoderMismatchError, match="change nothing.*allow_identical"):
        copy_tower_weights(clip, slot, "text")
    copy_tower_weights(clip, slot, "text", allow_identical=True)


def test_swap_into_meta_weights_is_refused():
    from transformers import CLIPTextModel

    from safegen.models.encoders import copy_tower_weights

    with torch.device("meta"):
        slot = CLIPTextModel(tiny_clip_text_config())
    with pytest.raises(EncoderMismatchError, match="offload"):
        copy_tower_weights(tiny_clip_model(seed=1), slot, "text")


def test_failed_swap_records_no_safe_encoder_id():
    from safegen import SafeStableDiffusionPipeline
    from safegen.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    with pytest.raises(EncoderMismatchError, match="change nothing"):
        SafeStableDiffusionPipeline.from_pipe(pipe, safe_encoder=pipe.text_encoder)


def test_truncated_slot_takes_first_layers_like_penultimate_hidden_state():
    """SD 2.x: a 23-layer slot accepts a 24-layer tower (here 3 into 2), exactly hidden_states[-2] + final LN."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from safegen.models.encoders import copy_tower_weights

    torch.manual_seed(4)
    deep = CLIPTextModelWithProjection(tiny_clip_text_config(num_hidden_layers=3, hidden_act="gelu")).eval()
    slot = CLIPTextModel(tiny_clip_text_config(num_hidden_layers=2, hidden_act="gelu")).eval()
    copy_tower_weights(deep, slot, "text")
    ids = _ids()
    with torch.no_grad():
        hidden = deep(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        want = deep.text_model.final_layer_norm(hidden)
        got = slot(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    shallow = CLIPTextModel(tiny_clip_text_config(num_hidden_layers=1, hidden_act="gelu"))
    with pytest.raises(EncoderMismatchError, match="num_hidden_layers 1 vs 2"):
        copy_tower_weights(shallow, slot, "text")


def test_swap_into_a_module_that_hands_out_copies_is_caught():
    """A state dict that does not alias the live weights swallows the write: the read-back must see it."""
    from transformers import CLIPTextModel

    from safegen.models.encoders import copy_tower_weights

    slot = CLIPTextModel(tiny_clip_text_config())
    real_state_dict = slot.state_dict
    slot.state_dict = lambda *a, **k: {key: v.clone() for key, v in real_state_dict(*a, **k).items()}
    with pytest.raises(EncoderMismatchError, match="does not hold the safe text encoder"):
        copy_tower_weights(tiny_clip_model(seed=12), slot, "text")
