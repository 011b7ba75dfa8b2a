"""Users' image files go through one loader (safegen.data.image_io.load_image) in every command.

Issue 22: `safegen i2i` had its own opener: a decompression bomb printed a traceback, EXIF
orientation was ignored, a mask of another size was stretched and a 4096x4096 photo ran at
full size. These tests pin the shared behaviour and each command's use of it.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from helpers import bomb_png
from PIL import Image
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.data.image_io import ImageLoadError, fit_size, load_image

runner = CliRunner()


def rotated_jpeg(path):
    """A 40x20 JPEG (left half red, right half blue) tagged "rotate 90 clockwise to view" (Orientation 6)."""
    arr = np.zeros((20, 40, 3), dtype="uint8")
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, format="JPEG", exif=exif, quality=95)
    return path


def test_bomb_is_refused_from_the_header_with_the_limit_named(tmp_path):
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "bomb.png")
    msg = str(info.value)
    assert msg.startswith(str(tmp_path / "bomb.png")) and "89,478,485-pixel limit" in msg and "resize it" in msg
    assert "\n" not in msg


def test_exif_orientation_is_applied(tmp_path):
    image = load_image(rotated_jpeg(tmp_path / "phone.jpg"))
    assert image.size == (20, 40)  # turned upright: the stored 40x20 becomes 20 wide, 40 high
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red on top after a clockwise turn


def test_bytes_already_read_decode_the_same_and_errors_name_the_file(tmp_path):
    rotated_jpeg(tmp_path / "phone.jpg")
    data = (tmp_path / "phone.jpg").read_bytes()
    assert load_image("named.jpg", data=data).tobytes() == load_image(tmp_path / "phone.jpg").tobytes()
    with pytest.raises(ImageLoadError, match="^named.png: .*pixel limit"):
        load_image("named.png", data=bomb_png())


def test_fit_size_keeps_aspect_within_the_area_in_multiples_of_8():
    assert fit_size(4096, 4096, 512 * 512) == (512, 512)
    assert fit_size(4096, 2048, 512 * 512) == (720, 360)
    assert fit_size(100, 60, 512 * 512) == (96, 56)  # small enough: only the remainder goes


# ----------------------------------------------------------------------------- safegen i2i


def _photo(path, size=(64, 64)):
    Image.fromarray((np.random.RandomState(0).rand(size[1], size[0], 3) * 255).astype("uint8")).save(path)
    return path


def _i2i(tiny_sd_dir, tmp_path, *args):
    base = ["i2i", "a red circle", "--model", str(tiny_sd_dir), "--steps", "2", "--device", "cpu"]
    return runner.invoke(app, [*base, "--out", str(tmp_path / "out"), "--seed", "1", *args])


@pytest.mark.parametrize("flag", ["--image", "--mask"])
def test_i2i_bomb_is_one_usage_line_not_a_traceback(flag, tiny_sd_dir, tmp_path):
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    photo = str(_photo(tmp_path / "photo.png"))
    args = ["--image", str(tmp_path / "bomb.png")] if flag == "--image" else ["--image", photo, "--mask"]
    res = _i2i(tiny_sd_dir, tmp_path, *args, *([str(tmp_path / "bomb.png")] if flag == "--mask" else []))
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "DecompressionBombError" not in res.output
    [line] = [ln for ln in res.output.splitlines() if ln.strip()]
    assert line.startswith(f"error: {flag} ") and "bomb.png" in line and "pixel limit" in line


def test_i2i_refuses_a_mask_of_another_size(tiny_sd_dir, tmp_path):
    photo = _photo(tmp_path / "photo.png")
    Image.new("L", (32, 32), 255).save(tmp_path / "mask.png")
    res = _i2i(tiny_sd_dir, tmp_path, "--image", str(photo), "--mask", str(tmp_path / "mask.png"))
    assert res.exit_code == 2, res.output
    assert "mask.png is 32x32" in res.output and "photo.png is 64x64" in res.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


def test_i2i_scales_a_large_photo_down_to_the_native_area_and_says_so(tiny_sd_dir, tmp_path):
    # 4096x4096 in a few KB (one colour): the case that ran at full size, 5 GB and minutes a step.
    Image.new("RGB", (4096, 4096), (200, 40, 40)).save(tmp_path / "huge.png")
    assert (tmp_path / "huge.png").stat().st_size < 100_000
    res = _i2i(tiny_sd_dir, tmp_path, "--image", str(tmp_path / "huge.png"), "--json")
    assert res.exit_code == 0, res.output
    [rec] = json.loads(res.stdout)
    assert rec["size"] == "64x64"  # the tiny model's native area: 32 latents x its VAE's factor 2
    assert "huge.png is 4096x4096" in res.stderr and "editing at 64x64" in res.stderr and "--size" in res.stderr
    res = _i2i(tiny_sd_dir, tmp_path, "--image", str(tmp_path / "huge.png"), "--size", "64x32", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["size"] == "64x32" and "note:" not in res.stderr


def test_i2i_edits_the_photo_upright(tiny_sd_dir, tmp_path):
    rotated_jpeg(tmp_path / "phone.jpg")
    res = _i2i(tiny_sd_dir, tmp_path, "--image", str(tmp_path / "phone.jpg"), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["size"] == "16x40"  # 20x40 upright, the width cropped to a multiple of 8


def test_i2i_mask_is_resized_with_its_photo(tiny_sd_dir, tmp_path):
    photo = _photo(tmp_path / "photo.png", (128, 128))
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (32, 32, 96, 96))
    mask.save(tmp_path / "mask.png")
    res = _i2i(tiny_sd_dir, tmp_path, "--image", str(photo), "--mask", str(tmp_path / "mask.png"), "--size", "64x64")
    assert res.exit_code == 0, res.output
    with Image.open(res.stdout.strip()) as im:
        assert im.size == (64, 64)


def test_truncated_jpeg_bytes_are_a_damaged_image_error(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format="JPEG")
    with pytest.raises(ImageLoadError, match="damaged or truncated"):
        load_image("cut.jpg", data=buf.getvalue()[:300])


# ----------------------------------------------------------------------------- training images


class _ArrayProcessor:
    """Stands in for a CLIP image processor: the decoded pixels as (1, 3, H, W) uint8."""

    def __call__(self, images, **_):
        return {"pixel_values": np.stack([np.asarray(im).transpose(2, 0, 1) for im in images])}


def test_training_images_are_read_upright_alike_live_and_for_the_cache(tmp_path):
    from safegen_train.data import DataError, _open_image
    from safegen_train.pixel_cache import decode_for_cache

    photo = rotated_jpeg(tmp_path / "phone.jpg")
    assert _open_image(str(photo), "train.jsonl:3").size == (20, 40)
    crop, _ = decode_for_cache(str(photo), _ArrayProcessor())
    assert crop.shape == (3, 40, 20)  # the cache stores what the live path decodes
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    with pytest.raises(DataError, match=r"^train.jsonl:4: cannot read image '.*bomb.png': .*pixel limit"):
        _open_image(str(tmp_path / "bomb.png"), "train.jsonl:4")
    crop, reason = decode_for_cache(str(tmp_path / "bomb.png"), _ArrayProcessor())
    assert crop is None and reason.startswith(str(tmp_path / "bomb.png") + ": ") and "ImageLoadError" not in reason


# ----------------------------------------------------------------------------- safegen i2t


def test_i2t_missing_file_is_one_message(tmp_path):
    res = runner.invoke(app, ["i2t", str(tmp_path / "absent.png"), "--preset", "toy"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [f"error: no image files found: {tmp_path / 'absent.png'}: no such file or folder"]
