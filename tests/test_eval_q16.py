"""The Q16-style classifier and the I2P rule (Q16 or NudeNet), offline with a tiny CLIP."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from safegen.core.errors import SafegenError
from safegen.safety import OutputClassifier, SafetyResult, load_classifier
from safegen.safety.q16 import I2PClassifier, Q16Classifier

runner = CliRunner()


def _images():
    red = Image.new("RGB", (32, 32), (230, 20, 20))
    noise = Image.effect_noise((32, 32), 90).convert("RGB")
    return red, noise


def _learned_prompts(path, clip_dir, safe_image, unsafe_image):
    """A prompts file whose 'inappropriate' embedding is one image's own embedding."""
    from safetensors.torch import save_file

    from safegen.retrieval.retriever import SafeRetriever

    emb = SafeRetriever.from_pretrained(str(clip_dir)).encode_images([safe_image, unsafe_image])  # (2, D)
    save_file({"prompts": emb.contiguous()}, str(path))
    return path


def test_learned_prompts_follow_q16s_rule(tmp_path, clip_dir):
    red, noise = _images()
    prompts = _learned_prompts(tmp_path / "q16.safetensors", clip_dir, red, noise)
    q16 = load_classifier("q16", clip=str(clip_dir), prompts=str(prompts))
    assert isinstance(q16, Q16Classifier)
    res = q16.classify([red, noise])
    assert [r.unsafe for r in res] == [False, True]  # each image is closest to its own embedding
    assert res[0].score < 0.5 < res[1].score and res[1].labels == {"inappropriate": res[1].score}
    assert q16.describe() == {
        "name": "q16",
        "threshold": 0.5,
        "clip": str(clip_dir),
        "prompts": "learned:q16.safetensors",
    }

    swapped = _learned_prompts(tmp_path / "swapped.safetensors", clip_dir, noise, red)
    flipped = Q16Classifier(clip=str(clip_dir), prompts=swapped).probabilities([red, noise])
    assert flipped == pytest.approx([1 - p.score for p in res], abs=1e-5)


def test_zero_shot_prompts_and_the_clip_env(clip_dir, monkeypatch):
    monkeypatch.setenv("SAFEGEN_Q16_CLIP", str(clip_dir))
    q16 = Q16Classifier()
    assert q16.clip == str(clip_dir) and q16.describe()["prompts"] == "zero-shot"
    probs = q16.probabilities(list(_images()))
    assert len(probs) == 2 and all(0.0 <= p <= 1.0 for p in probs)


def test_bad_prompt_files_and_missing_clip_fail_in_one_line(tmp_path, clip_dir, monkeypatch):
    import torch
    from safetensors.torch import save_file

    save_file({"prompts": torch.zeros(3, 4)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(SafegenError, match=r"shape \(2, D\), got \(3, 4\)"):
        Q16Classifier(clip=str(clip_dir), prompts=tmp_path / "bad.safetensors")
    save_file({"prompts": torch.zeros(2, 7)}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(SafegenError, match="width 7"):
        Q16Classifier(clip=str(clip_dir), prompts=tmp_path / "wide.safetensors")
    with pytest.raises(SafegenError, match=r"\.safetensors file"):
        Q16Classifier(clip=str(clip_dir), prompts=tmp_path / "prompts.p")
    monkeypatch.delenv("SAFEGEN_Q16_CLIP", raising=False)
    with pytest.raises(SafegenError) as err:
        Q16Classifier(clip="someone/not-a-cached-clip")
    msg = str(err.value)
    assert "\n" not in msg and "hf download someone/not-a-cached-clip" in msg and "SAFEGEN_Q16_CLIP" in msg


class _Fixed(OutputClassifier):
    name = "fixed"

    def __init__(self, flags):
        super().__init__(0.5)
        self.flags = flags

    def classify(self, images):
        return [SafetyResult(unsafe=f, score=float(f), labels={"x": float(f)}) for f in self.flags]


@pytest.mark.parametrize(("q", "n", "want"), [(False, False, False), (True, False, True), (False, True, True)])
def test_i2p_flags_an_image_when_either_judge_does(q, n, want):
    clf = I2PClassifier(q16=_Fixed([q]), nudenet=_Fixed([n]))
    (res,) = clf.classify([Image.new("RGB", (8, 8))])
    assert res.unsafe is want
    assert res.labels["q16_unsafe"] == float(q) and res.labels["nudenet_unsafe"] == float(n)
    assert clf.describe()["rule"].startswith("inappropriate when q16 or nudenet")


def test_i2p_with_real_nudenet_and_tiny_clip(clip_dir):
    red, noise = _images()
    clf = load_classifier("i2p", clip=str(clip_dir))
    res = clf.classify([red, noise])
    assert len(res) == 2
    for r in res:  # plain colour and noise: NudeNet sees nothing, so the verdict is Q16's
        assert r.labels["nudenet_unsafe"] == 0.0 and r.unsafe == bool(r.labels["q16_unsafe"])
    assert clf.describe()["nudenet"]["name"] == "nudenet"


def test_eval_t2i_classifier_i2p(tmp_path, tiny_sd_dir, clip_dir):
    from safegen.cli.main import app

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    args = ["eval", "t2i", "--prompts", str(prompts), "--model", str(tiny_sd_dir), "--methods", "original"]
    args += ["--classifier", "i2p", "--q16-clip", str(clip_dir), "--steps", "1", "--out", str(tmp_path / "e")]
    res = runner.invoke(app, [*args, "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["classifier"]["name"] == "i2p" and report["classifier"]["q16"]["clip"] == str(clip_dir)
    assert report["methods"]["original"]["n_images"] == 2
    no_q16 = [a for a in args if a not in ("--classifier", "i2p")]
    res = runner.invoke(app, [*no_q16, "--classifier", "nudenet", "--device", "cpu"])
    assert res.exit_code == 2 and "--q16-clip" in res.output
