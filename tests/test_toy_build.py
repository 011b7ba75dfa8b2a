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
    for name in ("clip", "safe_clip", "sd", "llava", "classifier", "rewriter"):
        assert (out / name).is_dir(), name
    report = json.loads((out / "build.json").read_text())
    from safegen_train.toy.build import STAGES

    assert tuple(report["stages"]) == STAGES
    # At this scale the toy SD may draw no concept, so the chain can end with no quadruple:
    # then its fit is recorded as skipped, with the render counts, and eval leaves it out.
    chain = report["stages"]["chain"]["result"]
    evaluated = set(report["stages"]["eval"]["result"]["encoders"])
    if "skipped" in chain["fit"]:
        assert chain["build"]["splits"].get("train", 0) == 0 and "render" in chain["fit"]["skipped"]
        assert not (out / "safe_clip_chain").exists() and evaluated == {"original", "safe_clip"}
    else:
        assert (out / "safe_clip_chain").is_dir() and evaluated == {"original", "safe_clip", "safe_clip_chain"}
    assert not (out / "_work").exists()
    assert str(tmp_path) not in json.dumps(report) and report["config"] == "configs/toy_safeclip.yaml"

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


# Reproducing the shipped tables: the pretrained toy models (CLIP, SD, LLaVA, classifier;
# about 35 minutes of the build) are taken as shipped, and every stage downstream of them is
# rebuilt at full scale (Safe-CLIP fit, rewriter, data chain + fit, evaluation; about 15
# minutes on one thread). A rebuild of the pretraining at a reduced scale does not reproduce
# them: at --scale 0.35 the toy SD draws in-distribution concepts in 35.6% of images (shipped:
# 95.6%), so nothing downstream is comparable. Margins, in points (absolute):
MARGIN_UNSAFE = 5.0  # every unsafe rate on every axis (wording, structure, both), original and both Safe-CLIPs
MARGIN_FIDELITY = 5.0  # safe-prompt attribute fidelity, canonical and other shapes


@pytest.mark.slow
def test_rebuild_downstream_of_pretraining_reproduces_the_shipped_tables(tmp_path):
    """Seeded: the Safe-CLIP fits, the data chain and the evaluation land on build.json's figures."""
    import shutil

    from safegen.models.presets import ASSETS_DIR

    toy = ASSETS_DIR / "toy"
    shipped = json.loads((toy / "build.json").read_text())
    out = tmp_path / "toy"
    for name in ("clip", "sd", "llava", "classifier"):
        shutil.copytree(toy / name, out / name)
    (out / "build.json").write_text(json.dumps(shipped))  # same scale, seed, config: its other stages are kept
    cmd = [sys.executable, "-m", "safegen_train.toy.build", "--out", str(out)]
    cmd += ["--stages", "data,safe_clip,rewriter,chain,eval"]
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1], timeout=7200)
    rebuilt = json.loads((out / "build.json").read_text())["stages"]["eval"]["result"]
    want_all = shipped["stages"]["eval"]["result"]
    assert rebuilt["prompts"] == want_all["prompts"]
    for name, want in want_all["encoders"].items():
        got = rebuilt["encoders"][name]
        for key in ("in_distribution", "held_out", "held_out_structure", "wording_x_structure"):
            assert abs(100 * (got[key] - want[key])) <= MARGIN_UNSAFE, (name, key, got[key], want[key])
        for key in ("fidelity", "fidelity_shapes"):
            assert abs(100 * (got[key] - want[key])) <= MARGIN_FIDELITY, (name, key, got[key], want[key])


def _absolute_paths(value, found):
    if isinstance(value, dict):
        for v in value.values():
            _absolute_paths(v, found)
    elif isinstance(value, list):
        for v in value:
            _absolute_paths(v, found)
    elif isinstance(value, str) and value.startswith("/"):
        found.append(value)
    return found


def test_shipped_build_record_names_no_path_of_the_building_machine():
    from safegen.models.presets import ASSETS_DIR

    report = json.loads((ASSETS_DIR / "toy" / "build.json").read_text())
    assert _absolute_paths(report, []) == []
    assert report["config"] == "configs/toy_safeclip.yaml"


def test_portable_paths_relative_to_the_deepest_root(tmp_path):
    from safegen_train.toy.build import REPO_ROOT, portable_paths

    out, work = tmp_path / "toy", tmp_path / "toy" / "_work"
    report = {
        "config": str(REPO_ROOT / "configs" / "toy_safeclip.yaml"),
        "stages": {"safe_clip": {"result": {"export_dir": str(work / "run" / "model"), "steps": 3}}},
        "elsewhere": ["/opt/data/x.json", "relative/y"],
        "weights": str(out / "clip"),
    }
    roots = {"": REPO_ROOT, "OUT/": out, "WORK/": work}
    assert portable_paths(report, roots) == {
        "config": "configs/toy_safeclip.yaml",
        "stages": {"safe_clip": {"result": {"export_dir": "WORK/run/model", "steps": 3}}},
        "elsewhere": ["/opt/data/x.json", "relative/y"],  # outside every root: kept as given
        "weights": "OUT/clip",
    }
