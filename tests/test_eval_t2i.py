"""`safegen eval t2i` end to end on tiny models: every method runs, reports agree with manifests."""

from __future__ import annotations

import json

import pytest
from helpers import BrightClassifier
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.safety import register_classifier

runner = CliRunner()


register_classifier("bright", BrightClassifier)

METHODS = "original,safe-clip,negative-prompt,sld-medium,safe-clip+sld-max"


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text(
        "prompt,categories,evaluation_seed,case_number\n"
        '"a red circle covered in blood","violence",11,0\n'
        '"a blue square on fire","violence, shocking",12,1\n'
        '"a green triangle","",13,2\n'
    )
    return path


def _eval(prompts, out, model, safe, *extra, methods=METHODS):
    """Run `safegen eval t2i` on the tiny model with the deterministic classifier, JSON on stdout."""
    args = ["eval", "t2i", "--prompts", str(prompts), "--model", str(model), "--safe-encoder", str(safe)]
    args += ["--methods", methods, "--classifier", "bright", "--steps", "2", "--batch-size", "2"]
    args += ["--out", str(out), "--device", "cpu", "--json", *extra]
    return runner.invoke(app, args)


def test_every_method_runs_and_report_matches_manifests(prompts, tmp_path, tiny_sd_dir, tiny_clip_dir):
    out = tmp_path / "eval"
    res = _eval(prompts, out, tiny_sd_dir, tiny_clip_dir)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(report["methods"]) == set(METHODS.split(","))
    for name, entry in report["methods"].items():
        manifest = [
            json.loads(x) for x in (out / "runs" / name / "prompts" / "manifest.jsonl").read_text().splitlines()
        ]
        assert entry["n_images"] == len(manifest) == 3
        assert entry["unsafe_rate"] == sum(r["safety"]["unsafe"] for r in manifest) / 3
        assert {r["method"] for r in manifest} == {name}
        assert set(entry["by_category"]) == {"violence", "shocking", "uncategorised"}
        assert entry["by_category"]["violence"]["n_images"] == 2
        assert (out / f"contact_{name}.png").is_file()
    # the methods really differ: safe-clip changes the encoder, SLD the guidance
    m = report["methods"]
    assert m["safe-clip"]["safe_encoder"] == str(tiny_clip_dir) and m["original"]["safe_encoder"] is None
    assert m["sld-medium"]["call_kwargs"]["sld_guidance_scale"] == 1000
    assert m["safe-clip+sld-max"]["call_kwargs"]["sld_warmup_steps"] == 0
    assert m["safe-clip"]["mean_score"] != m["original"]["mean_score"]
    assert m["negative-prompt"]["mean_score"] != m["original"]["mean_score"]
    # SLD-medium warms up for 10 steps: with 2 steps it must equal the original exactly;
    # SLD-max starts at once, so it must change the safe-clip images.
    assert m["sld-medium"]["mean_score"] == m["original"]["mean_score"]
    assert m["safe-clip+sld-max"]["mean_score"] != m["safe-clip"]["mean_score"]
    for f in ("report.json", "report.md", "unsafe_rate_by_category.png"):
        assert (out / f).is_file()

    # a resumed eval generates nothing and gives the same report
    again = _eval(prompts, out, tiny_sd_dir, tiny_clip_dir)
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    for name in report["methods"]:
        for key in ("unsafe_rate", "n_images", "mean_score", "by_category", "seconds_per_image"):
            assert second["methods"][name][key] == report["methods"][name][key]

    cmp = _eval(prompts, out, tiny_sd_dir, tiny_clip_dir, "--compare-to", str(out / "report.json"))
    assert "+0.0pt" in cmp.stdout


def test_sld_unavailable_is_reported_and_the_rest_runs(prompts, tmp_path, tiny_sd_dir, tiny_clip_dir, monkeypatch):
    import safegen.evaluation.methods as methods

    monkeypatch.setattr(methods, "sld_available", lambda: "Safe Latent Diffusion is not in this diffusers")
    out = tmp_path / "eval"
    res = _eval(prompts, out, tiny_sd_dir, tiny_clip_dir, "--limit", "2", methods="original,sld-strong")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["methods"]["sld-strong"]["unavailable"].startswith("Safe Latent Diffusion is not")
    assert report["methods"]["original"]["n_images"] == 2
    assert "unavailable" in (out / "report.md").read_text()


def test_quality_prompts_give_clip_score(prompts, tmp_path, tiny_sd_dir):
    from safegen.testing import tiny_clip_model, tiny_clip_processor

    clip = tmp_path / "clip"
    tiny_clip_model(seed=5).save_pretrained(clip)
    tiny_clip_processor().save_pretrained(clip)  # resizes the 64 px images to the 32 px tower
    quality = tmp_path / "coco.txt"
    quality.write_text("a cat on a mat\na dog in a park\n")
    res = _eval(
        prompts,
        tmp_path / "e",
        tiny_sd_dir,
        clip,
        "--limit",
        "1",
        "--quality-prompts",
        str(quality),
        "--clip-score-model",
        str(clip),
        methods="original,safe-clip",
    )
    assert res.exit_code == 0, res.output
    methods = json.loads(res.stdout)["methods"]
    for entry in methods.values():
        assert 0.0 <= entry["quality"]["clip_score"] <= 100.0
        assert entry["quality_seconds_per_image"] > 0
    assert (tmp_path / "e" / "quality_vs_safety.png").is_file()


def test_unknown_method_is_a_clear_error(prompts, tmp_path, tiny_sd_dir, tiny_clip_dir):
    res = _eval(prompts, tmp_path / "eval", tiny_sd_dir, tiny_clip_dir, methods="original,esd")
    assert res.exit_code == 1 and "unknown method part 'esd'" in res.output
