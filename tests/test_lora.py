"""LoRA adapters merge exactly, for every CLIP class and both transformers key layouts, or are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from safegen.core.errors import SafegenError
from safegen.models.encoders import load_safe_text_encoder, load_safe_vision_encoder, tower_state_dict
from safegen.models.lora import merge_lora_adapter
from safegen.testing import tiny_clip_model

TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
TOWER = {
    "CLIPTextModel": "text",
    "CLIPTextModelWithProjection": "text",
    "CLIPVisionModel": "vision",
    "CLIPVisionModelWithProjection": "vision",
    "CLIPModel": None,
}


def _base(cls_name, tmp_path, from_clip_folder):
    """Save a base and load it as `cls_name`, either from its own folder or from a CLIPModel folder."""
    import transformers

    clip = tiny_clip_model(seed=3)
    clip_dir = tmp_path / "clip"
    clip.save_pretrained(clip_dir)
    cls = getattr(transformers, cls_name)
    if cls_name == "CLIPModel" or from_clip_folder:
        return cls.from_pretrained(clip_dir), clip_dir
    model = cls.from_pretrained(clip_dir)  # the tower alone, saved as its own class
    own = tmp_path / "own"
    model.save_pretrained(own)
    return cls.from_pretrained(own), own


def _adapter(model, base_dir, out, extra_targets=(), alpha=8, **cfg):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=alpha, target_modules=TARGETS + list(extra_targets), **cfg)
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.normal_(std=0.3)  # B starts at zero: make the adapter change something
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(out)
    return peft_model


def _assert_same_tower(got, want, tower):
    towers = ["text", "vision"] if tower is None else [tower]
    for t in towers:
        want_sd, got_sd = tower_state_dict(want, t), tower_state_dict(got, t)
        assert want_sd, t
        for key, value in want_sd.items():
            torch.testing.assert_close(got_sd[key], value, atol=1e-6, rtol=1e-6, msg=lambda m, k=key: f"{k}: {m}")


CASES = [
    ("CLIPTextModel", False),
    ("CLIPTextModel", True),
    ("CLIPTextModelWithProjection", False),
    ("CLIPTextModelWithProjection", True),
    ("CLIPVisionModel", False),
    ("CLIPVisionModelWithProjection", True),
    ("CLIPModel", True),
]


@pytest.mark.parametrize(("cls_name", "from_clip_folder"), CASES)
def test_merge_equals_peft_merge_and_unload(tmp_path, cls_name, from_clip_folder):
    model, base_dir = _base(cls_name, tmp_path, from_clip_folder)
    extra = ["text_projection"] if cls_name in ("CLIPTextModelWithProjection", "CLIPModel") else []
    peft_model = _adapter(model, base_dir, tmp_path / "adapter", extra_targets=extra)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["auto_mapping"]["base_model_class"] == cls_name
    want = peft_model.merge_and_unload()
    got = merge_lora_adapter(tmp_path / "adapter")
    _assert_same_tower(got, want, TOWER[cls_name])
    # The merge really changed the weights (B was made non-zero).
    base, _ = _base(cls_name, tmp_path / "again", from_clip_folder)
    tower = TOWER[cls_name] or "text"
    assert not torch.equal(
        tower_state_dict(got, tower)["encoder.layers.0.mlp.fc1.weight"],
        tower_state_dict(base, tower)["encoder.layers.0.mlp.fc1.weight"],
    )


def _to_transformers4_layout(adapter_dir, tower):
    """Rewrite a transformers-5 adapter of a flattened tower class as transformers 4 saved it."""
    sd = load_file(str(adapter_dir / "adapter_model.safetensors"))
    prefix = "base_model.model."
    renamed = {prefix + f"{tower}_model." + k[len(prefix) :]: v for k, v in sd.items()}
    save_file(renamed, str(adapter_dir / "adapter_model.safetensors"))
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    cfg.pop("auto_mapping", None)  # older peft versions did not record the class
    (adapter_dir / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("cls_name", ["CLIPTextModel", "CLIPVisionModel"])
def test_transformers4_key_layout_merges_the_same(tmp_path, cls_name):
    model, base_dir = _base(cls_name, tmp_path, True)
    peft_model = _adapter(model, base_dir, tmp_path / "adapter")
    want = peft_model.merge_and_unload()
    _to_transformers4_layout(tmp_path / "adapter", TOWER[cls_name])
    _assert_same_tower(merge_lora_adapter(tmp_path / "adapter"), want, TOWER[cls_name])


def test_text_adapter_on_clip_folder_keeps_the_trained_projection(tmp_path):
    """The common recipe: CLIPTextModel.from_pretrained(<CLIPModel folder>) + LoRA; projection kept from the base."""
    model, base_dir = _base("CLIPTextModel", tmp_path, True)
    peft_model = _adapter(model, base_dir, tmp_path / "adapter", alpha=16, use_rslora=True)
    merged_tower = peft_model.merge_and_unload()
    loaded = load_safe_text_encoder(tmp_path / "adapter")
    assert type(loaded).__name__ == "CLIPTextModelWithProjection"
    base_clip = tiny_clip_model(seed=3)
    torch.testing.assert_close(loaded.text_projection.weight, base_clip.text_projection.weight, atol=0, rtol=0)
    ids = torch.tensor([[1512, 320, 736, 1513] + [1513] * 4])
    with torch.no_grad():
        hidden = merged_tower(input_ids=ids).pooler_output
        want = base_clip.text_projection(hidden)
        torch.testing.assert_close(loaded(input_ids=ids).text_embeds, want, atol=1e-5, rtol=1e-5)


def test_embedding_lora_and_patterns(tmp_path):
    model, base_dir = _base("CLIPTextModel", tmp_path, True)
    peft_model = _adapter(
        model,
        base_dir,
        tmp_path / "adapter",
        extra_targets=["token_embedding"],
        rank_pattern={"fc1": 2},
        alpha_pattern={"fc2": 3},
    )
    want = peft_model.merge_and_unload()
    _assert_same_tower(merge_lora_adapter(tmp_path / "adapter"), want, "text")


def test_unplaced_or_half_pairs_are_errors_naming_them(tmp_path):
    model, base_dir = _base("CLIPTextModel", tmp_path, True)
    _adapter(model, base_dir, tmp_path / "adapter")
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    sd = load_file(str(path))
    save_file(
        {
            **sd,
            "base_model.model.encoder.layers.9.mlp.fc1.lora_A.weight": torch.zeros(4, 32),
            "base_model.model.encoder.layers.9.mlp.fc1.lora_B.weight": torch.zeros(37, 4),
        },
        str(path),
    )
    with pytest.raises(SafegenError, match=r"match nothing.*layers\.9\.mlp\.fc1.*--base"):
        merge_lora_adapter(tmp_path / "adapter")
    half = {k: v for k, v in sd.items() if not k.endswith("layers.0.mlp.fc1.lora_B.weight")}
    save_file(half, str(path))
    with pytest.raises(SafegenError, match=r"one half.*layers\.0\.mlp\.fc1"):
        merge_lora_adapter(tmp_path / "adapter")


def test_wrong_base_is_refused(tmp_path):
    from transformers import CLIPTextModel

    from safegen.testing import tiny_clip_text_config

    model, base_dir = _base("CLIPTextModel", tmp_path, True)
    _adapter(model, base_dir, tmp_path / "adapter")
    wide = tmp_path / "wide"
    CLIPTextModel(tiny_clip_text_config(seed_hidden=48, intermediate_size=40)).save_pretrained(wide)
    with pytest.raises(SafegenError, match="--base"):
        load_safe_text_encoder(tmp_path / "adapter", base=str(wide))


def test_vision_adapter_loads_as_vision_encoder(tmp_path):
    model, base_dir = _base("CLIPVisionModel", tmp_path, True)
    peft_model = _adapter(model, base_dir, tmp_path / "adapter")
    want = peft_model.merge_and_unload()
    loaded = load_safe_vision_encoder(tmp_path / "adapter")
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixel_values=pixels, output_hidden_states=True).hidden_states[-1],
            want(pixel_values=pixels, output_hidden_states=True).hidden_states[-1],
            atol=1e-5,
            rtol=1e-5,
        )


def test_auto_map_base_is_refused(tmp_path):
    model, base_dir = _base("CLIPTextModel", tmp_path, True)
    _adapter(model, base_dir, tmp_path / "adapter")
    cfg = json.loads((base_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (base_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SafegenError, match=r"custom model code.*auto_map"):
        merge_lora_adapter(tmp_path / "adapter")
