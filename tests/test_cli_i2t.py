"""`safegen i2t` through typer's CliRunner, and the image-file handling under it."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from helpers import bomb_png
from PIL import Image
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.data.image_io import ImageLoadError, expand_image_args, iter_images, load_image
from safegen.testing import tiny_llava, tiny_safe_vision_encoder

runner = CliRunner()


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved tiny LLaVA, a matching and a mismatching safe tower, and a folder of good and bad images."""
    root = tmp_path_factory.mktemp("i2t")
    model, processor = tiny_llava(seed=0)
    model.save_pretrained(root / "llava")
    processor.save_pretrained(root / "llava")
    tiny_safe_vision_encoder(seed=1).save_pretrained(root / "safe")
    tiny_safe_vision_encoder(seed=1, image_size=64).save_pretrained(root / "safe_64px")
    imgs = root / "imgs"
    imgs.mkdir()
    for i, color in enumerate(("red", "green", "blue")):
        Image.new("RGB", (40, 30), color).save(imgs / f"{i}_good.png")
    (imgs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return root


def _i2t(*args: str):
    return runner.invoke(app, ["i2t", *args, "--device", "cpu", "--max-new-tokens", "6"])


# ----------------------------------------------------------------------------- the command


def test_corrupt_image_among_good_ones(world):
    res = _i2t(str(world / "imgs"), "--model", str(world / "llava"), "-e", str(world / "safe"), "-t", "0")
    assert res.exit_code == 1, res.output
    lines = res.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(world / "imgs" / f"{i}_good.png") for i in range(3)]
    assert all(line.split("\t")[1] for line in lines)
    assert f"error: {world / 'imgs' / 'corrupt.png'}: damaged or truncated image" in res.stderr
    assert "3 image(s) captioned, 1 problem(s)" in res.stderr


def test_json_compare_records_both_captions(world):
    pattern = str(world / "imgs" / "*_good.png")
    res = _i2t(
        pattern, "--model", str(world / "llava"), "-e", str(world / "safe"), "--compare", "--json", "--seed", "7"
    )
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(recs) == 3
    assert all({"original", "safe"} <= rec.keys() for rec in recs)
    assert recs[0]["safe_encoder"] == str(world / "safe") and recs[0]["seed"] == 7 and recs[0]["temperature"] == 0.2
    assert any(rec["original"] != rec["safe"] for rec in recs)  # the tower swap shows up


def test_greedy_cli_matches_the_library(world):
    from safegen.pipelines.image_to_text import SafeLlavaCaptioner

    image = world / "imgs" / "0_good.png"
    res = _i2t(str(image), "--model", str(world / "llava"), "-e", "none", "-t", "0", "--json")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["safe_encoder"] is None
    cap = SafeLlavaCaptioner.from_pretrained(world / "llava")
    assert rec["caption"] == cap.caption(str(image), temperature=0, max_new_tokens=6)[0]


def test_out_folder_is_resumable_and_never_a_file(world, tmp_path):
    out = tmp_path / "caps"
    res = _i2t(str(world / "imgs"), "--model", str(world / "llava"), "--out", str(out), "-t", "0")
    assert res.exit_code == 1
    assert res.stdout == ""
    recs = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(r["variant"] == "caption" and len(r["content_key"]) == 64 for r in recs)
    assert "corrupt.png: damaged" in (out / "errors.log").read_text()
    assert "3 caption(s) made, 0 reused" in res.stderr
    # a re-run reuses every caption whose image and settings are unchanged
    again = _i2t(str(world / "imgs"), "--model", str(world / "llava"), "--out", str(out), "-t", "0")
    assert "0 caption(s) made, 3 reused" in again.stderr, again.stderr
    assert len((out / "captions.jsonl").read_text().splitlines()) == 3
    # another setting: captions are redone and reported
    third = _i2t(str(world / "imgs"), "--model", str(world / "llava"), "--out", str(out), "-t", "0", "--prompt", "Hi")
    assert "3 caption(s) made, 0 reused (same image and settings), 3 changed" in third.stderr, third.stderr
    # -o naming a file (the input image!) is a usage error before anything runs; the file is untouched
    image = world / "imgs" / "0_good.png"
    before = image.read_bytes()
    res = _i2t(str(image), "--model", str(world / "llava"), "-o", str(image))
    assert res.exit_code == 2 and "is a file; pass a folder" in res.output
    assert image.read_bytes() == before


def test_mismatched_safe_encoder_is_one_line_exit_1(world):
    res = _i2t(str(world / "imgs" / "0_good.png"), "--model", str(world / "llava"), "-e", str(world / "safe_64px"))
    assert res.exit_code == 1
    assert "image_size 64 vs 32" in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x.png"], "no model given"),
        (["{imgs}", "--model", "{llava}", "--compare"], "--compare needs a safe encoder"),
        (["nothing-here-*.png", "--model", "{llava}"], "no image files found"),
        (["{imgs}", "--model", "{llava}", "--temperature", "-1"], "temperature"),
    ],
)
def test_usage_errors_exit_2(world, args, message):
    args = [a.format(imgs=world / "imgs", llava=world / "llava") for a in args]
    res = _i2t(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_presets_resolve_to_captioner_and_vision_encoder():
    from safegen.core.errors import SafegenError
    from safegen.pipelines.loading import resolve_i2t_sources

    llava = resolve_i2t_sources("llava-1.5-7b", None, None)
    assert (llava.base, llava.safe_encoder) == ("llava-hf/llava-1.5-7b-hf", "aimagelab/safeclip_vit-l_14_336")
    toy = resolve_i2t_sources("toy", None, "none")
    assert toy.base.endswith("toy/llava") and toy.safe_encoder is None
    with pytest.raises(SafegenError, match="not i2t"):
        resolve_i2t_sources("sd-1.4", None, None)


def test_missing_hub_weights_is_one_line(world, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = _i2t(str(world / "imgs" / "0_good.png"), "--preset", "llava-1.5-7b")
    assert res.exit_code == 1
    assert "hf download llava-hf/llava-1.5-7b-hf" in res.stderr and "Traceback" not in res.output


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from safegen.cli.main import app\n"
        "for argv in (['--help'], ['i2t', '--help'], ['retrieve', '--help']):\n"
        "    try:\n"
        "        app(argv, standalone_mode=True)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "i2t" in res.stdout and "retrieve" in res.stdout and "--compare" in res.stdout


# ----------------------------------------------------------------------------- image files


def test_bad_files_raise_clear_errors(tmp_path):
    cases = {
        "notes.png": b"hello, I am text",
        "cut.jpg": truncated_jpeg(),
        "bomb.png": bomb_png(),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageLoadError, match="notes.png: not an image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageLoadError, match="cut.jpg: damaged or truncated"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageLoadError, match=r"bomb.png: .*decompression bomb"):
        load_image(tmp_path / "bomb.png")
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "absent.png")
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="possible decompression bomb"):
        load_image(tmp_path / "big.png", max_pixels=5_000)


def test_iter_images_keeps_going_after_a_bad_file(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"nope")
    Image.new("L", (8, 8), 128).save(tmp_path / "c.png")
    results = list(iter_images([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]))
    assert [r[2] is None for r in results] == [True, False, True]
    a, c = results[0][1], results[2][1]
    assert a.mode == "RGB" and a.getpixel((0, 0)) == (255, 255, 255)  # transparency flattened onto white
    assert c.mode == "RGB" and c.getpixel((0, 0)) == (128, 128, 128)


def test_expand_image_args(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "readme.txt", "sub/c.webp"):
        (tmp_path / name).write_bytes(b"x")
    got = expand_image_args([str(tmp_path)])
    assert [p.name for p in got.paths] == ["a.JPG", "b.png"] and not got.problems
    got = expand_image_args([str(tmp_path)], recursive=True)
    assert [p.name for p in got.paths] == ["a.JPG", "b.png", "c.webp"]
    # Files are taken as given (a non-image is reported when loaded); duplicates collapse.
    got = expand_image_args([str(tmp_path / "readme.txt"), str(tmp_path / "*.png"), str(tmp_path / "b.png")])
    assert [p.name for p in got.paths] == ["readme.txt", "b.png"]
    got = expand_image_args([str(tmp_path / "missing.png"), str(tmp_path / "*.gif"), str(tmp_path / "sub" / "..")])
    assert len(got.problems) == 2 and "no such file" in got.problems[0] and "matches no files" in got.problems[1]
