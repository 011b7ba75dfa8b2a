"""`safegen i2i`: image-to-image and inpainting from the terminal, with t2i's metadata and --compare."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.core.io import read_png_parameters

runner = CliRunner()


def _photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")).save(path)
    return path


def _mask(tmp_path):
    path = tmp_path / "mask.png"
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(path)
    return path


def _i2i(*args):
    return runner.invoke(app, ["i2i", *args, "--steps", "2", "--device", "cpu"])


def test_img2img_compare_writes_both_variants_sheet_and_metadata(tiny_sd_dir, tiny_clip_dir, tmp_path):
    photo = _photo(tmp_path)
    res = _i2i(
        "a red circle",
        "--image",
        str(photo),
        "--strength",
        "0.9",
        "--model",
        str(tiny_sd_dir),
        "--safe-encoder",
        str(tiny_clip_dir),
        "--seed",
        "3",
        "--out",
        str(tmp_path / "out"),
        "--compare",
    )
    assert res.exit_code == 0, res.output
    paths = res.stdout.strip().splitlines()
    assert [p.rsplit("-", 2)[-2] for p in paths[:2]] == ["original", "safe"] and paths[2].endswith("-compare.png")
    params = read_png_parameters(paths[1])
    assert params["image"] == str(photo) and params["strength"] == 0.9 and params["task"] == "image2image"
    assert params["safe_encoder"] == str(tiny_clip_dir) and params["seed"] == 3 and params["size"] == "64x64"
    with Image.open(paths[1]) as im:
        assert "Denoising strength: 0.9" in im.text["parameters"]
    original, safe = (np.asarray(Image.open(p), dtype=int) for p in paths[:2])
    assert np.abs(original - safe).max() > 0  # only the text encoder differs, and it shows
    with Image.open(paths[2]) as sheet:
        assert sheet.size == (128, 64)


def test_inpainting_keeps_the_unmasked_part(tiny_sd_dir, tmp_path):
    photo, mask = _photo(tmp_path), _mask(tmp_path)
    res = _i2i(
        "a blue square",
        "--image",
        str(photo),
        "--mask",
        str(mask),
        "--strength",
        "1.0",
        "--model",
        str(tiny_sd_dir),
        "--out",
        str(tmp_path / "out"),
        "--json",
    )
    assert res.exit_code == 0, res.output
    [rec] = json.loads(res.stdout)
    assert rec["task"] == "inpaint" and rec["mask"] == str(mask) and rec["safe_encoder"] is None
    edited = np.asarray(Image.open(rec["file"]), dtype=int)
    source = np.asarray(Image.open(photo), dtype=int)
    inside = np.abs(edited[20:44, 20:44] - source[20:44, 20:44]).mean()
    outside = np.abs(edited[:8] - source[:8]).mean()
    assert inside > outside  # the masked square is repainted more than the kept border


def test_bad_inputs_are_usage_errors(tiny_sd_dir, tmp_path):
    res = _i2i("x", "--image", str(tmp_path / "missing.png"), "--model", str(tiny_sd_dir))
    assert res.exit_code == 2 and "--image" in res.output and "no such file" in res.output
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    res = _i2i("x", "--image", str(_photo(tmp_path)), "--mask", str(bad), "--model", str(tiny_sd_dir))
    assert res.exit_code == 2 and "--mask" in res.output and "not an image Pillow can read" in res.output
    res = _i2i("x", "--image", str(_photo(tmp_path)), "--strength", "1.5", "--model", str(tiny_sd_dir))
    assert res.exit_code == 2


def test_same_edit_twice_never_overwrites_and_bad_options_fail_before_loading(tiny_sd_dir, tmp_path):
    photo, out = _photo(tmp_path), tmp_path / "out"
    args = ["a red circle", "--image", str(photo), "--model", str(tiny_sd_dir), "--seed", "1", "--out", str(out)]
    first, second = _i2i(*args), _i2i(*args)
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    a, b = first.stdout.strip(), second.stdout.strip()
    assert a != b and Image.open(a).tobytes() == Image.open(b).tobytes()  # same pixels, a new file
    assert read_png_parameters(a)["content_key"] == read_png_parameters(b)["content_key"]
    for bad in (["--seed", str(2**70)], ["--guidance", "nan"], ["--attention", "bogus"], ["--out", str(photo)]):
        res = _i2i(*args[:-2], "--out", str(out), *bad) if bad[0] != "--out" else _i2i(*args[:-2], *bad)
        assert res.exit_code == 2, (bad, res.output)
