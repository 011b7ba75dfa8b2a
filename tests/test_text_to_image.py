"""SafeStableDiffusionPipeline: injection changes exactly the text encoder, round trips hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from safegen import SafeStableDiffusionPipeline, SafeStableDiffusionXLPipeline, inject_text_encoder
from safegen.errors import EncoderMismatchError, SafegenError
from safegen.testing import get_dummy_sdxl_components, tiny_clip_model, tiny_sd_pipeline


def _run(pipe, prompt="a red circle", seed=0, **kw):
    out = pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(seed), output_type="np", **kw)
    return out


def test_same_weights_same_images_different_weights_differ():
    pipe = tiny_sd_pipeline()
    base = _run(pipe).images
    same = SafeStableDiffusionPipeline.from_pipe(
        pipe, safe_encoder=pipe.text_encoder, safe_encoder_kwargs={"allow_identical": True}
    )
    np.testing.assert_array_equal(_run(same).images, base)
    other = SafeStableDiffusionPipeline.from_pipe(pipe, safe_encoder=tiny_clip_model(seed=7))
    assert np.abs(_run(other).images - base).max() > 1e-3
    # from_pipe copied the encoder: the original pipeline is untouched
    np.testing.assert_array_equal(_run(pipe).images, base)


def test_injection_really_replaces_weights():
    pipe = tiny_sd_pipeline()
    clip = tiny_clip_model(seed=7)
    inject_text_encoder(pipe, clip)
    for key, value in pipe.text_encoder.state_dict().items():
        src_key = key if key.startswith("text_model.") else "text_model." + key
        torch.testing.assert_close(value, clip.state_dict()[src_key])
    assert pipe.text_encoder.safegen_source == "CLIPModel"


def test_output_names_the_safe_encoder_and_none_is_original(tiny_sd_dir, tiny_clip_dir):
    original = SafeStableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    original.set_progress_bar_config(disable=True)
    plain = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    plain.set_progress_bar_config(disable=True)
    out = _run(original)
    assert out.safe_encoder_id is None
    np.testing.assert_array_equal(out.images, _run(plain).images)

    safe = SafeStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_encoder=str(tiny_clip_dir))
    safe.set_progress_bar_config(disable=True)
    out = _run(safe)
    assert out.safe_encoder_id == str(tiny_clip_dir)
    assert out.nsfw_content_detected is None
    images, nsfw = safe("x", num_inference_steps=2, output_type="np", return_dict=False)
    assert images.shape == (1, 64, 64, 3)  # sample_size 32 x VAE factor 2


def test_save_load_round_trip_readable_by_plain_diffusers(tmp_path, tiny_clip_dir):
    pipe = tiny_sd_pipeline()
    safe = SafeStableDiffusionPipeline.from_pipe(pipe, safe_encoder=str(tiny_clip_dir))
    safe.set_progress_bar_config(disable=True)
    want = _run(safe).images
    safe.save_pretrained(tmp_path)

    plain = StableDiffusionPipeline.from_pretrained(tmp_path)
    plain.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_run(plain).images, want)

    again = SafeStableDiffusionPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    assert again.safe_encoder_id == str(tiny_clip_dir)
    np.testing.assert_array_equal(_run(again).images, want)


def test_mismatched_encoder_is_refused_with_both_sides():
    from transformers import CLIPTextModel

    from safegen.testing import tiny_clip_text_config

    pipe = tiny_sd_pipeline()
    wide = CLIPTextModel(tiny_clip_text_config(seed_hidden=48))
    with pytest.raises(EncoderMismatchError, match=r"hidden_size 48 vs 32.*encoder vs target"):
        SafeStableDiffusionPipeline.from_pipe(pipe, safe_encoder=wide)


def test_sdxl_covers_text_encoder_and_refuses_wrong_slot():
    pipe = SafeStableDiffusionXLPipeline(**get_dummy_sdxl_components())
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(0)
    base = pipe("a red circle", num_inference_steps=2, generator=gen, output_type="np").images
    safe = SafeStableDiffusionXLPipeline.from_pipe(pipe, safe_encoder=tiny_clip_model(seed=9))
    out = safe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == base.shape
    assert np.abs(out.images - base).max() > 1e-3
    assert safe.safe_encoder_ids == {"text_encoder": "CLIPModel"}
    assert safe.uncovered_text_encoders == ["text_encoder_2"]
    # A ViT-L-style (quick_gelu) encoder does not fit the bigG-style slot (gelu).
    with pytest.raises(EncoderMismatchError, match="hidden_act"):
        SafeStableDiffusionXLPipeline.from_pipe(pipe, safe_encoder_2=tiny_clip_model(seed=9))


def test_inject_unknown_slot_is_clear():
    pipe = tiny_sd_pipeline()
    with pytest.raises(SafegenError, match="text_encoder_2"):
        inject_text_encoder(pipe, tiny_clip_model(), slot="text_encoder_2")
