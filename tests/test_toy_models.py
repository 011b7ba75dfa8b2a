"""The shipped toy preset: files, sizes, and that every folder loads with its library's own loader."""

from __future__ import annotations

from pathlib import Path

import pytest

TOY = Path(__file__).resolve().parents[1] / "safegen" / "assets" / "toy"
FOLDERS = ("clip", "safe_clip", "safe_clip_chain", "sd", "llava", "classifier", "rewriter")

# No skip: the repository ships these weights, so a missing folder is a broken checkout and fails.


def test_shipped_weights_are_small_safetensors_fp16():
    files = [p for p in TOY.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total < 30 * 1024 * 1024, f"toy assets are {total / 2**20:.1f} MB"
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert len(weights) >= 9  # clip, safe_clip(_chain), sd (text encoder, vae, unet), llava, classifier, rewriter
    from safetensors import safe_open

    for path in weights:
        with safe_open(str(path), "pt") as f:
            dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
        # The rewriter (0.45 MB) ships as trained, in fp32: the build's data chain ran with exactly these weights.
        allowed = {"F32"} if path.parent.name == "rewriter" else {"F16", "I64"}
        assert dtypes <= allowed, f"{path}: {dtypes}"
    for name in FOLDERS:
        assert (TOY / name).is_dir()


@pytest.mark.parametrize("name", ["clip", "safe_clip"])
def test_clip_folders_load_with_processor(name):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from safegen_train.toy import make_quadruples

    model = CLIPModel.from_pretrained(str(TOY / name)).eval()
    processor = CLIPProcessor.from_pretrained(str(TOY / name))
    assert next(model.parameters()).dtype == torch.float32  # fp16 on disk, fp32 on the CPU
    record = make_quadruples(1, seed=5)[0]
    inputs = processor(
        text=[record["safe_text"]], images=[record["safe_image"]], return_tensors="pt", padding="max_length"
    )
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (1, 1)


def test_sd_folder_is_a_plain_diffusers_pipeline():
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(TOY / "sd"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle on a white background", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == (32, 32)


def test_toy_preset_and_classifier_registry():
    from safegen.models.presets import get_preset
    from safegen.safety import list_classifiers, load_classifier
    from safegen_train.toy import make_quadruples

    preset = get_preset("toy")
    for source in preset.sources().values():
        assert Path(source).is_dir(), source
    assert "toy" in list_classifiers()
    clf = load_classifier("toy")
    record = make_quadruples(1, seed=11)[0]
    safe, unsafe = clf.classify([record["safe_image"], record["unsafe_image"]])
    assert not safe.unsafe and unsafe.unsafe
    assert unsafe.labels[record["tag"]] > 0.5
    assert safe.labels[f"shape={record['shape']}"] > 0.5 and safe.labels[f"colour={record['colour']}"] > 0.5
    assert clf.predict([record["safe_image"]])[0]["shape"] == record["shape"]
