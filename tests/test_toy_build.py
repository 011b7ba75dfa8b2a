"""The one rebuild command, end to end at a reduced size (slow: minutes on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_rebuild_at_reduced_scale(tmp_path):
    out = tmp_path / "toy"
    cmd = [sys.executable, "-m", "safegen_train.toy.build", "--out", str(out), "--scale", "0.02"]
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1], timeout=3600)
    for name in ("clip", "safe_clip", "sd", "llava", "classifier"):
        assert (out / name).is_dir(), name
    report = json.loads((out / "build.json").read_text())
    assert set(report["stages"]) == {"data", "classifier", "clip", "sd", "llava", "safe_clip"}
    assert not (out / "_work").exists()

    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPProcessor

    from safegen.pipelines.image_to_text import SafeLlavaCaptioner
    from safegen.pipelines.text_to_image import SafeStableDiffusionPipeline
    from safegen.safety.toy import ToyClassifier

    for name in ("clip", "safe_clip"):
        CLIPModel.from_pretrained(str(out / name))
        CLIPProcessor.from_pretrained(str(out / name))
    StableDiffusionPipeline.from_pretrained(str(out / "sd"), safety_checker=None)
    pipe = SafeStableDiffusionPipeline.from_pretrained(str(out / "sd"), safe_encoder=str(out / "safe_clip"))
    assert pipe.safe_encoder_id == str(out / "safe_clip")
    captioner = SafeLlavaCaptioner.from_pretrained(str(out / "llava"), safe_encoder=str(out / "safe_clip"))
    assert captioner.safe_encoder_id is not None
    ToyClassifier(out / "classifier")
