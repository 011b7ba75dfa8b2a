"""Every covered pipeline family: safe class found, only the text encoder changes, gaps reported."""

from __future__ import annotations

import logging

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

import safegen
from safegen.core.errors import SafegenError
from safegen.pipelines import safe_pipeline
from safegen.testing import tiny_clip_model
from safegen.testing.pipelines import tiny_pipeline


def _photo() -> Image.Image:
    return Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))


def _mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def _inputs(kind: str) -> dict:
    return {
        "img2img": {"image": _photo(), "strength": 0.8},
        "inpaint": {"image": _photo(), "mask_image": _mask()},
        "controlnet": {"image": _photo()},
        "flow": {"height": 32, "width": 32, "max_sequence_length": 16},
    }[kind]


# (diffusers class, dummy family, inputs, named safe class, uncovered slots once text_encoder is safe)
FAMILIES = [
    ("StableDiffusionImg2ImgPipeline", "sd", "img2img", "SafeStableDiffusionImg2ImgPipeline", []),
    ("StableDiffusionInpaintPipeline", "sd-inpaint", "inpaint", "SafeStableDiffusionInpaintPipeline", []),
    ("StableDiffusionControlNetPipeline", "sd-controlnet", "controlnet", "SafeStableDiffusionControlNetPipeline", []),
    (
        "StableDiffusionXLImg2ImgPipeline",
        "sdxl",
        "img2img",
        "SafeStableDiffusionXLImg2ImgPipeline",
        ["text_encoder_2"],
    ),
    (
        "StableDiffusionXLInpaintPipeline",
        "sdxl-inpaint",
        "inpaint",
        "SafeStableDiffusionXLInpaintPipeline",
        ["text_encoder_2"],
    ),
    (
        "StableDiffusionXLControlNetPipeline",
        "sdxl-controlnet",
        "controlnet",
        "SafeStableDiffusionXLControlNetPipeline",
        ["text_encoder_2"],
    ),
    ("FluxPipeline", "flux", "flow", "SafeFluxPipeline", ["text_encoder_2"]),
    ("StableDiffusion3Pipeline", "sd3", "flow", "SafeStableDiffusion3Pipeline", ["text_encoder_2", "text_encoder_3"]),
]


def _run(pipe, kind):
    gen = torch.Generator().manual_seed(0)
    return pipe("a red circle", num_inference_steps=2, generator=gen, output_type="np", **_inputs(kind))


@pytest.mark.parametrize(("name", "family", "kind", "safe_name", "uncovered"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_changes_only_the_text_encoder(name, family, kind, safe_name, uncovered):
    pipe = tiny_pipeline(getattr(diffusers, name), family)
    base = _run(pipe, kind).images

    same = safegen.make_safe(pipe, safe_encoder=pipe.text_encoder, safe_encoder_kwargs={"allow_identical": True})
    assert type(same).__name__ == safe_name and safegen.pipeline_class_for(pipe) is type(same)
    np.testing.assert_array_equal(_run(same, kind).images, base)

    safe = safegen.make_safe(pipe, safe_encoder=tiny_clip_model(seed=9))
    out = _run(safe, kind)
    assert out.images.shape == base.shape and np.abs(out.images - base).max() > 1e-3
    assert out.safe_encoder_id == "CLIPModel" and len(out.to_tuple()) == 1
    assert safe.uncovered_text_encoders == uncovered
    np.testing.assert_array_equal(_run(pipe, kind).images, base)  # the source pipeline is still the original


def test_named_classes_are_exported_and_keep_diffusers_signatures():
    import inspect

    names = [n for n in safegen.__all__ if n.startswith("SafeStableDiffusion") and n.endswith("Pipeline")]
    assert len(names) == 12  # SD and SDXL: text, img2img, inpaint, and ControlNet for each of the three
    for name in names:
        cls = getattr(safegen, name)
        parent = cls._diffusers_class
        assert parent.__name__ == name[len("Safe") :]
        assert inspect.signature(cls.__call__) == inspect.signature(parent.__call__)
        assert safegen.safe_pipeline_class(parent) is cls


def test_uncovered_encoders_are_named_once_on_stderr(monkeypatch, caplog):
    monkeypatch.setattr(safe_pipeline, "_WARNED", set())
    pipe = tiny_pipeline(diffusers.FluxPipeline, "flux")
    with caplog.at_level(logging.WARNING, logger="safegen"):
        safegen.make_safe(pipe, safe_encoder=tiny_clip_model(seed=9))
        safegen.make_safe(pipe, safe_encoder=tiny_clip_model(seed=8))
        safegen.make_safe(pipe)  # the original on purpose: nothing claimed, nothing to warn about
    warned = [r.getMessage() for r in caplog.records if "no Safe-CLIP covers" in r.getMessage()]
    assert warned == [
        "SafeFluxPipeline: no Safe-CLIP covers text_encoder_2 (T5EncoderModel); "
        "prompts still reach the model through it unchanged"
    ]


def test_a_t5_slot_is_refused_with_the_reason():
    pipe = tiny_pipeline(diffusers.FluxPipeline, "flux")
    with pytest.raises(SafegenError, match=r"FluxPipeline.text_encoder_2 is a T5EncoderModel.*no Safe-CLIP"):
        safegen.make_safe(pipe, safe_encoder_2=tiny_clip_model(seed=9))
    with pytest.raises(TypeError, match="safe_encoder_3"):
        safegen.make_safe(pipe, safe_encoder_3=tiny_clip_model(seed=9))


def test_a_pipeline_without_text_encoder_is_refused():
    with pytest.raises(SafegenError, match="no text encoder"):
        safegen.safe_pipeline_class(diffusers.DDPMPipeline)


def test_auto_pipelines_switch_task_and_keep_the_safe_encoder(tiny_sd_dir, tiny_clip_dir, tmp_path):
    t2i = safegen.SafeStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_encoder=str(tiny_clip_dir))
    i2i = safegen.SafeAutoPipelineForImage2Image.from_pipe(t2i)
    assert type(i2i) is safegen.SafeStableDiffusionImg2ImgPipeline
    assert i2i.safe_encoder_id == str(tiny_clip_dir) and i2i.text_encoder is t2i.text_encoder

    inpaint = safegen.SafeAutoPipelineForInpainting.from_pretrained(tiny_sd_dir, safe_encoder=str(tiny_clip_dir))
    assert type(inpaint) is safegen.SafeStableDiffusionInpaintPipeline
    inpaint.set_progress_bar_config(disable=True)
    want = _run(inpaint, "inpaint").images
    assert want.shape == (1, 64, 64, 3)

    # Saved, the folder is a plain diffusers inpainting pipeline with the safe weights baked in.
    inpaint.save_pretrained(tmp_path / "inpaint")
    plain = diffusers.StableDiffusionInpaintPipeline.from_pretrained(tmp_path / "inpaint")
    plain.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_run(plain, "inpaint").images, want)
    assert safegen.pipeline_class_for(tmp_path / "inpaint") is safegen.SafeStableDiffusionInpaintPipeline
    assert safegen.pipeline_class_for(tiny_sd_dir, task="image2image") is safegen.SafeStableDiffusionImg2ImgPipeline
