"""SafeLlavaCaptioner on a tiny LLaVA built in code: swapping, refusing, batching, loading."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from safegen.core.errors import EncoderMismatchError, MissingWeightsError, SafegenError
from safegen.data.image_io import ImageLoadError
from safegen.pipelines.image_to_text import SafeLlavaCaptioner, find_vision_tower
from safegen.testing import tiny_llava, tiny_safe_vision_encoder

GREEDY = dict(temperature=0.0, max_new_tokens=8)


@pytest.fixture(scope="module")
def images():
    return [Image.new("RGB", (48, 40), color) for color in ("red", "green", "blue")]


@pytest.fixture()
def captioner():
    model, processor = tiny_llava(seed=0)
    return SafeLlavaCaptioner.from_model(model, processor)


@pytest.fixture(scope="module")
def saved_llava(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llava")
    model, processor = tiny_llava(seed=0)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _tower_copy(captioner):
    """A separate module holding exactly the captioner's tower weights."""
    tower = captioner.vision_tower
    enc = type(tower)(tower.config).eval()
    enc.load_state_dict(tower.state_dict())
    return enc


def test_finds_the_clip_tower(captioner):
    name, tower = find_vision_tower(captioner.model)
    assert name == "model.vision_tower"
    assert type(tower).__name__ == "CLIPVisionModel"
    assert captioner.safe_encoder_id is None


def test_identical_weights_leave_captions_unchanged(captioner, images):
    before = captioner.caption(images, **GREEDY)
    captioner.set_safe_encoder(_tower_copy(captioner), allow_identical=True)
    assert captioner.safe_encoder_id is not None
    assert captioner.caption(images, **GREEDY) == before
    assert all(c for c in before)  # the tiny model really generates


def test_different_weights_change_captions_and_restore(captioner, images):
    before = captioner.caption(images, **GREEDY)
    original_patch = captioner.vision_tower.embeddings.patch_embedding.weight.clone()
    captioner.set_safe_encoder(tiny_safe_vision_encoder(seed=1))
    after = captioner.caption(images, **GREEDY)
    assert after != before
    assert not torch.equal(captioner.vision_tower.embeddings.patch_embedding.weight, original_patch)
    # Only the tower changed: the language model and projector are untouched by the swap.
    captioner.set_safe_encoder(None)
    assert captioner.safe_encoder_id is None
    assert torch.equal(captioner.vision_tower.embeddings.patch_embedding.weight, original_patch)
    assert captioner.caption(images, **GREEDY) == before


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"image_size": 64}, "image_size 64 vs 32"),
        ({"patch_size": 16}, "patch_size 16 vs 8"),
        ({"hidden_size": 48}, "hidden_size 48 vs 32"),
    ],
)
def test_shape_mismatch_is_refused_before_any_weight_changes(captioner, override, named):
    before = {k: v.clone() for k, v in captioner.vision_tower.state_dict().items()}
    with pytest.raises(EncoderMismatchError) as info:
        captioner.set_safe_encoder(tiny_safe_vision_encoder(seed=1, **override))
    assert named in str(info.value) and "vision tower" in str(info.value)
    if "image_size" in override:
        assert "32 px Safe-CLIP" in str(info.value)
    after = captioner.vision_tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert captioner.safe_encoder_id is None


def test_batched_equals_one_at_a_time(captioner, images):
    assert captioner.caption(images, batch_size=2, **GREEDY) == captioner.caption(images, batch_size=1, **GREEDY)


def test_single_image_and_sampling_seed(captioner, images):
    one = captioner.caption(images[0], **GREEDY)
    assert isinstance(one, list) and len(one) == 1
    a = captioner.caption(images, temperature=0.7, max_new_tokens=8, seed=3)
    b = captioner.caption(images, temperature=0.7, max_new_tokens=8, seed=3)
    assert a == b
    with pytest.raises(ValueError, match="temperature"):
        captioner.caption(images, temperature=-1)


def test_prompt_uses_the_models_chat_template(captioner):
    assert captioner.build_prompt() == "USER: <image>\nDescribe this image. ASSISTANT:"
    raw = "<image> say something"
    assert captioner.build_prompt(raw) == raw


def test_from_pretrained_with_safe_encoder_folder(saved_llava, tmp_path, images):
    enc_dir = tmp_path / "safe_vision"
    tiny_safe_vision_encoder(seed=1).save_pretrained(enc_dir)
    loaded = SafeLlavaCaptioner.from_pretrained(saved_llava, safe_encoder=str(enc_dir))
    assert loaded.safe_encoder_id == str(enc_dir) and loaded.model_id == str(saved_llava)
    model, processor = tiny_llava(seed=0)
    in_memory = SafeLlavaCaptioner.from_model(model, processor, safe_encoder=tiny_safe_vision_encoder(seed=1))
    assert loaded.caption(images, **GREEDY) == in_memory.caption(images, **GREEDY)
    with pytest.raises(SafegenError, match="not kept"):
        loaded.set_safe_encoder(None)  # keep_original defaults to False on load: no silent 2x memory


def test_missing_hub_id_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="nobody-here/no-such-llava"):
        SafeLlavaCaptioner.from_pretrained("nobody-here/no-such-llava")


def test_model_without_clip_tower_is_refused():
    model = torch.nn.Module()
    model.vision_tower = torch.nn.Linear(2, 2)
    with pytest.raises(SafegenError, match="its tower is a Linear"):
        find_vision_tower(model)


def test_bad_image_path_names_the_file(captioner, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageLoadError, match="broken.png"):
        captioner.caption([str(bad)], **GREEDY)


def test_llava_next_variant_swaps_its_clip_tower(images):
    """LLaVA-NeXT (any-resolution tiles) also reads a CLIPVisionModel: the same captioner works."""
    from transformers import (
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    from safegen.testing import TINY_LLAVA_CHAT_TEMPLATE, tiny_clip_vision_config, tiny_llava_tokenizer

    tok = tiny_llava_tokenizer()
    grid = [[32, 32], [32, 64], [64, 32]]
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=grid
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=TINY_LLAVA_CHAT_TEMPLATE,
    )
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4
    )
    config = LlavaNextConfig(
        vision_config=tiny_clip_vision_config().to_dict() | {"model_type": "clip_vision_model"},
        text_config=text.to_dict() | {"model_type": "llama"},
        image_token_id=processor.image_token_id,
        image_grid_pinpoints=grid,
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    captioner = SafeLlavaCaptioner.from_model(LlavaNextForConditionalGeneration(config).eval(), processor)
    before = captioner.caption(images, **GREEDY)
    captioner.set_safe_encoder(tiny_safe_vision_encoder(seed=1))
    assert captioner.caption(images, **GREEDY) != before
