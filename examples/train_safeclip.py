"""Train, export and load a Safe-CLIP end to end on a tiny CLIP, offline, in about a minute on a CPU.

    python examples/train_safeclip.py [--out runs/example]

It writes a tiny CLIPModel folder (random weights, real CLIP BPE), eight safe/unsafe
quadruples as JSONL with PNG twins, trains with the paper's settings for a few steps,
exports the merged model, and loads it back with ``safegen.models.encoders``. For a real run
the same happens with ``safegen-train fit -c configs/train_safeclip_example.yaml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def make_world(out: Path) -> tuple[Path, Path]:
    """A tiny CLIP folder (model + tokenizer + image processor) and a JSONL of quadruples."""
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor

    from safegen.testing import tiny_clip_model, tiny_tokenizer

    clip_dir = out / "clip"
    tiny_clip_model(0).save_pretrained(str(clip_dir))
    tiny_tokenizer().save_pretrained(str(clip_dir))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(clip_dir)
    )
    data = out / "data"
    (data / "img").mkdir(parents=True, exist_ok=True)
    animals = ["dog", "cat", "horse", "bird", "cow", "fox", "goat", "duck"]
    lines = []
    for i, animal in enumerate(animals):
        pixels = np.kron(np.random.default_rng(i).integers(0, 255, (4, 4, 3)), np.ones((8, 8, 1))).astype("uint8")
        Image.fromarray(pixels).save(data / "img" / f"safe_{i}.png")
        pixels[8:24, 8:24] = [200, 0, 0]  # the unsafe twin: same scene, one red element
        Image.fromarray(pixels).save(data / "img" / f"unsafe_{i}.png")
        lines.append(
            json.dumps(
                {
                    "safe_text": f"a {animal} in a field",
                    "unsafe_text": f"a bleeding {animal} in a field",
                    "safe_image": f"img/safe_{i}.png",
                    "unsafe_image": f"img/unsafe_{i}.png",
                    "tag": "violence",
                }
            )
        )
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    return clip_dir, data / "train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    args = parser.parse_args()

    from safegen.models.encoders import load_safe_text_encoder
    from safegen_train.config import TrainConfig
    from safegen_train.trainer import fit

    clip_dir, train = make_world(args.out)
    config = TrainConfig(
        model=str(clip_dir),
        train_data=str(train),
        val_data=str(train),
        output_dir=str(args.out / "run"),
        batch_size=4,
        epochs=3,
        max_text_length=16,
        cpu=True,
    )
    result = fit(config, overwrite=True)  # the example's own run folder: a rerun starts it again
    print(f"trained {result.global_step} steps; recall-sum {result.last_validation['recall_sum']:.1f}")
    encoder = load_safe_text_encoder(str(result.export_dir))
    print(f"exported {result.export_dir}: loads as {type(encoder).__name__}")


if __name__ == "__main__":
    main()
