"""Caption images with the original and the Safe-CLIP vision tower of a LLaVA model, side by side.

Runs offline in seconds: it uses the toy preset's trained captioner and Safe-CLIP when
they are installed (safegen/assets/toy), else random tiny models built in code (their
captions are gibberish, but the original/safe difference is real). For LLaVA-1.5 use
``SafeLlavaCaptioner.from_pretrained("llava-hf/llava-1.5-7b-hf",
safe_encoder="aimagelab/safeclip_vit-l_14_336")``.

    python examples/caption_images.py [IMAGE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

from safegen import SafeLlavaCaptioner, get_preset
from safegen.testing import tiny_llava, tiny_safe_vision_encoder


def demo_images() -> list[Image.Image]:
    """Two drawn pictures, so the example needs no files."""
    images = []
    for fill, background in (("red", "green"), ("blue", "white")):
        im = Image.new("RGB", (96, 96), background)
        ImageDraw.Draw(im).ellipse((20, 20, 76, 76), fill=fill)
        images.append(im)
    return images


def load_captioner() -> tuple[SafeLlavaCaptioner, object]:
    """The original captioner and the safe encoder to swap in (toy weights if shipped)."""
    toy = get_preset("toy")
    if Path(toy.captioner).is_dir() and Path(toy.safe_vision_encoder).is_dir():
        return SafeLlavaCaptioner.from_pretrained(toy.captioner), toy.safe_vision_encoder
    print("toy weights not installed: using random tiny models", file=sys.stderr)
    model, processor = tiny_llava(seed=0)
    return SafeLlavaCaptioner.from_model(model, processor), tiny_safe_vision_encoder(seed=1)


def main() -> None:
    images = sys.argv[1:] or demo_images()
    captioner, safe_encoder = load_captioner()
    settings = dict(temperature=0.0, max_new_tokens=24)  # greedy: the two runs differ only by the tower
    original = captioner.caption(images, **settings)
    captioner.set_safe_encoder(safe_encoder)  # keeps a copy of the original tower; set_safe_encoder(None) restores it
    safe = captioner.caption(images, **settings)
    for i, (a, b) in enumerate(zip(original, safe, strict=True)):
        name = images[i] if isinstance(images[i], str) else f"demo image {i}"
        print(f"{name}\n  original: {a!r}\n  safe:     {b!r}  ({captioner.safe_encoder_id})")


if __name__ == "__main__":
    main()
