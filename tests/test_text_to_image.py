"""SafeStableDiffusionPipeline: injection changes exactly the text encoder, round trips hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from safegen import SafeStableDiffusionPipeline, SafeStableDiffusionXLPipeline, inject_text_encoder
from safegen.core.errors import EncoderMismatchError, SafegenError
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

    # A folder whose safe text encoder was replaced after saving never claims the safe id.
    pipe.text_encoder.save_pretrained(tmp_path / "text_encoder")
    with pytest.raises(SafegenError, match=r"text_encoder holds the safe encoder .* its files changed"):
        SafeStableDiffusionPipeline.from_pretrained(tmp_path)


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


# ----------------------------------------------------------------------------- drop-in behaviour (issue 12)


def test_call_signature_and_docs_are_diffusers_own():
    import inspect

    from diffusers import StableDiffusionXLPipeline

    for safe_cls, parent in (
        (SafeStableDiffusionPipeline, StableDiffusionPipeline),
        (SafeStableDiffusionXLPipeline, StableDiffusionXLPipeline),
    ):
        assert inspect.signature(safe_cls.__call__) == inspect.signature(parent.__call__)
        assert "num_images_per_prompt" in inspect.signature(safe_cls.__call__).parameters
        assert safe_cls.__call__.__doc__ == parent.__call__.__doc__
    pipe = tiny_sd_pipeline(cls=SafeStableDiffusionPipeline)
    assert inspect.signature(pipe.__call__) == inspect.signature(tiny_sd_pipeline().__call__)


def test_wrong_variant_raises_diffusers_value_error_so_fallbacks_work(tiny_sd_dir):
    with pytest.raises(ValueError) as plain:
        StableDiffusionPipeline.from_pretrained(tiny_sd_dir, variant="fp16")
    with pytest.raises(ValueError) as safe:
        SafeStableDiffusionPipeline.from_pretrained(tiny_sd_dir, variant="fp16")
    assert type(safe.value) is type(plain.value) and str(safe.value) == str(plain.value)
    assert not isinstance(safe.value, SafegenError)

    # The common pattern: try the fp16 variant, fall back on ValueError.
    try:
        pipe = SafeStableDiffusionPipeline.from_pretrained(tiny_sd_dir, variant="fp16")
    except ValueError:
        pipe = SafeStableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    assert isinstance(pipe, SafeStableDiffusionPipeline)


def _fake_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """A Hugging Face cache holding ``folder`` as the main snapshot of ``repo_id``."""
    import shutil

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_only_an_uncached_offline_hub_id_becomes_missing_weights(tmp_path, tiny_sd_dir):
    from safegen.core.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError) as missing:
        SafeStableDiffusionPipeline.from_pretrained("safegen-test/not-cached", cache_dir=str(tmp_path))
    assert isinstance(missing.value, OSError)  # still what diffusers raises for a missing repo
    assert "\n" not in str(missing.value) and "hf download safegen-test/not-cached" in str(missing.value)

    _fake_hub_cache(tmp_path, "safegen-test/tiny-sd", tiny_sd_dir)
    pipe = SafeStableDiffusionPipeline.from_pretrained("safegen-test/tiny-sd", cache_dir=str(tmp_path))
    assert isinstance(pipe, SafeStableDiffusionPipeline)
    # A fully cached id with a wrong variant is diffusers' ValueError, not "weights missing".
    with pytest.raises(ValueError) as wrong:
        SafeStableDiffusionPipeline.from_pretrained("safegen-test/tiny-sd", cache_dir=str(tmp_path), variant="fp16")
    assert not isinstance(wrong.value, MissingWeightsError)


def _dtypes(pipe):
    return {name: m.dtype for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}


def test_from_pipe_keeps_dtype_and_device_and_the_original_runs():
    pipe = tiny_sd_pipeline().to(dtype=torch.bfloat16)
    safe = SafeStableDiffusionPipeline.from_pipe(pipe, safe_encoder=tiny_clip_model(seed=7))
    assert set(_dtypes(pipe).values()) == {torch.bfloat16} == set(_dtypes(safe).values())
    assert safe.device == pipe.device and safe.unet is pipe.unet and safe.text_encoder is not pipe.text_encoder
    assert safe._progress_bar_config == pipe._progress_bar_config
    base = _run(pipe).images
    assert base.shape == (1, 64, 64, 3) and np.isfinite(base).all()
    assert np.abs(_run(safe).images - base).max() > 1e-3

    # Mixed dtypes survive as they are; an explicit dtype is still obeyed.
    pipe.text_encoder.to(torch.float32)
    before = _dtypes(pipe)
    assert _dtypes(SafeStableDiffusionPipeline.from_pipe(pipe, safe_encoder=tiny_clip_model(seed=7))) == before
    assert _dtypes(pipe) == before
    SafeStableDiffusionPipeline.from_pipe(pipe, dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32


def test_eval_methods_keep_the_base_pipeline_dtype():
    from safegen.evaluation.methods import build_methods

    pipe = tiny_sd_pipeline().to(dtype=torch.bfloat16)
    methods = build_methods(["original", "safe-clip"], pipe, safe_encoder=tiny_clip_model(seed=7))
    assert methods[1].pipe.unet is pipe.unet
    assert set(_dtypes(pipe).values()) == {torch.bfloat16} == set(_dtypes(methods[1].pipe).values())
    for method in methods:
        assert np.isfinite(_run(method.pipe).images).all()


def test_push_to_hub_uploads_a_complete_plain_diffusers_folder(tmp_path, tiny_clip_dir, monkeypatch):
    import shutil
    import types

    import diffusers.utils.hub_utils as hub_utils
    import huggingface_hub

    uploads = []

    def fake_create_repo(repo_id, **kwargs):
        return types.SimpleNamespace(repo_id=f"user/{repo_id}")

    def fake_upload_folder(*, repo_id, folder_path, **kwargs):
        dest = tmp_path / "hub" / repo_id
        shutil.copytree(folder_path, dest)  # what the hub receives, at the moment of the upload
        uploads.append((repo_id, dest))

    monkeypatch.setattr(huggingface_hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(hub_utils, "upload_folder", fake_upload_folder)
    safe = SafeStableDiffusionPipeline.from_pipe(tiny_sd_pipeline(), safe_encoder=str(tiny_clip_dir))
    want = _run(safe).images
    safe.save_pretrained(tmp_path / "safe-sd", push_to_hub=True)

    [(repo_id, pushed)] = uploads
    assert repo_id == "user/safe-sd"
    assert json.loads((pushed / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert json.loads((pushed / "safegen.json").read_text())["safe_encoder_ids"] == {
        "text_encoder": str(tiny_clip_dir)
    }
    plain = StableDiffusionPipeline.from_pretrained(pushed)
    plain.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_run(plain).images, want)


def test_to_tuple_and_return_dict_false_have_diffusers_shapes():
    plain = tiny_sd_pipeline()
    safe = SafeStableDiffusionPipeline.from_pipe(plain, safe_encoder=tiny_clip_model(seed=7))
    p, s = _run(plain), _run(safe)
    assert len(s.to_tuple()) == len(p.to_tuple()) == 1  # (images,) without a safety checker
    assert s[0] is s.images and s.safe_encoder_id == "CLIPModel"
    assert isinstance(s, type(p))
    raw = safe("x", num_inference_steps=2, output_type="np", return_dict=False)
    assert isinstance(raw, tuple) and len(raw) == len(
        plain("x", num_inference_steps=2, output_type="np", return_dict=False)
    )

    xl = SafeStableDiffusionXLPipeline(**get_dummy_sdxl_components())
    xl.set_progress_bar_config(disable=True)
    out = xl("x", num_inference_steps=1, output_type="np")
    assert len(out.to_tuple()) == 1 and out.safe_encoder_id is None
