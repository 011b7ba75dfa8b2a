"""`safegen t2i` and `safegen presets` through typer's CliRunner: exit codes, files, messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.core.io import read_png_parameters

runner = CliRunner()


def _t2i(*args):
    return runner.invoke(app, ["t2i", *args, "--steps", "2", "--device", "cpu"])


def test_t2i_writes_png_with_parameters(tiny_sd_dir, tiny_clip_dir, tmp_path):
    res = _t2i(
        "a red circle",
        "--model",
        str(tiny_sd_dir),
        "--safe-encoder",
        str(tiny_clip_dir),
        "--seed",
        "42",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert len(records) == 1
    path = records[0]["file"]
    params = read_png_parameters(path)
    assert params["seed"] == 42 and params["prompt"] == "a red circle"
    assert params["safe_encoder"] == str(tiny_clip_dir) and params["model"] == str(tiny_sd_dir)
    with Image.open(path) as im:
        assert "Seed: 42" in im.text["parameters"]
        assert im.size == (64, 64)


def test_random_seed_is_recorded_and_reproduces(tiny_sd_dir, tmp_path):
    res = _t2i("a blue square", "--model", str(tiny_sd_dir), "--out", str(tmp_path / "a"), "--json", "-n", "2")
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)
    seeds = [r["seed"] for r in recs]
    assert seeds[1] == seeds[0] + 1 and recs[0]["safe_encoder"] is None
    # The recorded seed of image 2 regenerates image 2 on its own.
    res2 = _t2i(
        "a blue square", "--model", str(tiny_sd_dir), "--out", str(tmp_path / "b"), "--json", "--seed", str(seeds[1])
    )
    again = json.loads(res2.stdout)[0]["file"]
    import numpy as np

    # Same latents and weights; batch size 1 vs 2 may differ by float rounding (one 8-bit level).
    diff = np.abs(np.asarray(Image.open(again), dtype=int) - np.asarray(Image.open(recs[1]["file"]), dtype=int))
    assert diff.max() <= 2


def test_compare_writes_original_safe_and_side_by_side(tiny_sd_dir, tiny_clip_dir, tmp_path):
    res = _t2i(
        "a red circle",
        "--model",
        str(tiny_sd_dir),
        "--safe-encoder",
        str(tiny_clip_dir),
        "--seed",
        "1",
        "--out",
        str(tmp_path),
        "--compare",
        "--size",
        "64x64",
    )
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in tmp_path.glob("*.png"))  # beside them: the folder's output marker
    assert len(names) == 3 and names[0] == "a_red_circle-1-compare.png"
    # image names end in a key of their inputs: the original and the safe one differ in it
    assert re.fullmatch(r"a_red_circle-1-original-[0-9a-f]{10}\.png", names[1])
    assert re.fullmatch(r"a_red_circle-1-safe-[0-9a-f]{10}\.png", names[2])
    orig = Image.open(tmp_path / names[1])
    safe = Image.open(tmp_path / names[2])
    assert list(orig.getdata()) != list(safe.getdata())
    assert Image.open(tmp_path / "a_red_circle-1-compare.png").size == (128, 64)
    assert f"side by side (original | safe): {tmp_path / 'a_red_circle-1-compare.png'}" in res.stdout


def test_check_flags_with_scores(tiny_sd_dir, tmp_path):
    res = _t2i("a red circle", "--model", str(tiny_sd_dir), "--out", str(tmp_path), "--check", "nudenet", "--json")
    assert res.exit_code == 0, res.output
    safety = json.loads(res.stdout)[0]["safety"]
    assert set(safety) == {"unsafe", "score", "labels"} and 0.0 <= safety["score"] <= 1.0


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["   "], 2, "prompt is empty"),
        (["x", "--size", "64by64"], 2, "WIDTHxHEIGHT"),
        (["x", "--dtype", "fp8"], 2, "unknown dtype"),
        (["x", "--preset", "nope"], 2, "unknown preset 'nope'; choose one of: llava-1.5-13b, "),
        (["x", "--model", "someone/not-cached-model"], 1, "someone/not-cached-model"),
    ],
)
def test_bad_input_exit_codes(args, code, needle, tiny_sd_dir):
    res = _t2i(*args) if "--model" in args or "--preset" in args else _t2i(*args, "--model", str(tiny_sd_dir))
    assert res.exit_code == code, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_missing_weights_is_one_line_with_hint():
    res = _t2i("a cat", "--preset", "sd-1.4")
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    assert "CompVis/stable-diffusion-v1-4" in lines[0] and "hf download" in lines[0] and "--preset toy" in lines[0]


def test_encoder_mismatch_is_one_line(tiny_sd_dir, tmp_path):
    from transformers import CLIPTextModel

    from safegen.testing import tiny_clip_text_config

    CLIPTextModel(tiny_clip_text_config(seed_hidden=48)).save_pretrained(tmp_path / "wide")
    wide, out = str(tmp_path / "wide"), str(tmp_path / "out")
    res = _t2i("x", "--model", str(tiny_sd_dir), "--safe-encoder", wide, "--out", out)
    assert res.exit_code == 1
    assert "hidden_size 48 vs 32" in res.output and "Traceback" not in res.output


def test_long_prompt_warns_and_shows_the_cut(tiny_sd_dir, tmp_path):
    prompt = " ".join(["red"] * 80) + " TAILWORD"
    res = _t2i(prompt, "--model", str(tiny_sd_dir), "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "cut" in res.output and "TAILWORD" in res.output


def test_presets_json_lists_toy_folders():
    res = runner.invoke(app, ["presets", "--json"])
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert {"sd-1.4", "sd-1.5", "sd-2-base", "sdxl", "toy"} <= set(rows)
    assert rows["toy"]["clip"].endswith("assets/toy/clip")
    assert rows["toy"]["safe_encoder"].endswith("assets/toy/safe_clip")
    assert rows["sd-1.4"]["available_offline"] is False


def test_help_does_not_import_torch():
    code = "import sys\nfrom safegen.cli.main import app\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    res = subprocess.run([sys.executable, "-m", "safegen.cli.main", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "t2i" in res.stdout
