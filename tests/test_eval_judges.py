"""`safegen eval t2i --judges a,b`: the same images scored by each judge, one report column each, cached."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.safety import OutputClassifier, SafetyResult, register_classifier

runner = CliRunner()


class _Brightness(OutputClassifier):
    """Flags images brighter (or, inverted, darker) than 0.5: deterministic, so the test recomputes every flag."""

    calls = 0  # images scored, across instances: shows what the cache saves
    invert = False

    def __init__(self, threshold: float = 0.5):
        super().__init__(threshold)

    def classify(self, images):
        type(self).calls += len(images)
        out = []
        for im in images:
            gray = list(im.convert("L").getdata())
            score = sum(gray) / (255.0 * len(gray))
            score = 1.0 - score if self.invert else score
            out.append(SafetyResult(unsafe=self.flags(score), score=score, labels={}))
        return out


class BrightJudge(_Brightness):
    name = "bright-judge"


class DarkJudge(_Brightness):
    name = "dark-judge"
    invert = True


register_classifier("bright-judge", BrightJudge)
register_classifier("dark-judge", DarkJudge)


def _eval(tmp_path, model, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green triangle\n")
    args = ["eval", "t2i", "--prompts", str(prompts), "--model", str(model), "--methods", "original"]
    args += ["--steps", "2", "--batch-size", "2", "--out", str(tmp_path / "eval"), "--device", "cpu", *extra]
    return runner.invoke(app, args)


def test_several_judges_score_the_same_images_and_are_cached(tmp_path, tiny_sd_dir):
    res = _eval(tmp_path, tiny_sd_dir, "--judges", "bright-judge,dark-judge", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert list(report["judges"]) == ["bright-judge", "dark-judge"]
    entry = report["methods"]["original"]
    folder = tmp_path / "eval" / "runs" / "original" / "prompts"
    files = sorted(json.loads(line)["file"] for line in (folder / "manifest.jsonl").read_text().splitlines())
    brightness = []
    for f in files:
        gray = list(Image.open(folder / f).convert("L").getdata())
        brightness.append(sum(gray) / (255.0 * len(gray)))
    expected = {"bright-judge": [b >= 0.5 for b in brightness], "dark-judge": [b <= 0.5 for b in brightness]}
    for judge, flags in expected.items():
        col = entry["judges"][judge]
        assert col["n_images"] == 3 and col["n_unsafe"] == sum(flags)
        assert col["unsafe_rate"] == sum(flags) / 3
    assert entry["unsafe_rate"] == entry["judges"]["bright-judge"]["unsafe_rate"]  # the first judge is the run's own
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "## Unsafe rate by judge (same images)" in md and "| method | bright-judge | dark-judge |" in md

    # A second run reuses the images and the second judge's cached verdicts: nothing is scored again.
    DarkJudge.calls = 0
    again = _eval(tmp_path, tiny_sd_dir, "--judges", "bright-judge,dark-judge", "--json")
    assert again.exit_code == 0, again.output
    assert DarkJudge.calls == 0
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["methods"]["original"]["judges"] == entry[
        "judges"
    ]


def test_judge_flags_are_checked_before_any_model_loads(tmp_path, tiny_sd_dir):
    res = _eval(tmp_path, tiny_sd_dir, "--judges", "bright-judge,nudenet-0.45")
    assert res.exit_code == 2 and "unknown judge(s) nudenet-0.45" in res.output
    res = _eval(tmp_path, tiny_sd_dir, "--judges", "bright-judge", "--classifier", "nudenet")
    assert res.exit_code == 2 and "not both" in res.output
    res = _eval(tmp_path, tiny_sd_dir, "--judges", "bright-judge,bright-judge")
    assert res.exit_code == 2 and "named twice" in res.output
