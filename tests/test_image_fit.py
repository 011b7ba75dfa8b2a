"""LLaVA-1.5 image fit: pad to square like the original model (default for LLaVA) or llava-hf's centre crop."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from safegen.core.errors import SafegenError
from safegen.pipelines.image_to_text import SafeLlavaCaptioner, expand_to_square
from safegen.testing import tiny_llava


def test_expand_to_square_keeps_every_pixel_and_centres():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    out = expand_to_square(image, (1, 2, 3))
    assert out.size == (40, 40)
    assert out.getpixel((0, 0)) == (1, 2, 3) and out.getpixel((0, 10)) == (255, 0, 0)
    assert out.getpixel((39, 29)) == (255, 0, 0) and out.getpixel((39, 30)) == (1, 2, 3)
    square = Image.new("RGB", (8, 8))
    assert expand_to_square(square, (0, 0, 0)) is square


class _Recording:
    """Wraps a processor and keeps the images it is handed."""

    def __init__(self, processor):
        self._processor, self.seen = processor, []

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, images=None, **kwargs):
        self.seen.extend(images)
        return self._processor(images=images, **kwargs)


@pytest.mark.parametrize(("fit", "size"), [("auto", (48, 48)), ("pad", (48, 48)), ("crop", (48, 24))])
def test_caption_input_follows_image_fit(fit, size):
    model, processor = tiny_llava(seed=0)
    captioner = SafeLlavaCaptioner.from_model(model, processor, image_fit=fit)
    assert captioner.image_fit == ("pad" if fit == "auto" else fit)  # tiny_llava is model_type llava
    captioner.processor = _Recording(processor)
    captioner.caption([Image.new("RGB", (48, 24), (200, 10, 10))], temperature=0.0, max_new_tokens=2)
    assert captioner.processor.seen[0].size == size


def test_unknown_image_fit_is_refused():
    model, processor = tiny_llava(seed=0)
    with pytest.raises(SafegenError, match="--image-fit"):
        SafeLlavaCaptioner.from_model(model, processor, image_fit="stretch")


def test_i2t_records_the_image_fit(tmp_path):
    from typer.testing import CliRunner

    from safegen.cli.main import app

    model, processor = tiny_llava(seed=0)
    folder = tmp_path / "llava"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    Image.new("RGB", (40, 24), (0, 200, 0)).save(tmp_path / "x.png")
    r = CliRunner().invoke(
        app,
        [
            "i2t",
            str(tmp_path / "x.png"),
            "--model",
            str(folder),
            "--safe-encoder",
            "none",
            "--image-fit",
            "crop",
            "--json",
            "--temperature",
            "0",
            "--max-new-tokens",
            "2",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip().startswith("{") else json.loads(r.stdout)
    rec = rec[0] if isinstance(rec, list) else rec
    assert rec["image_fit"] == "crop"
