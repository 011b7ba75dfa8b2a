"""Plain helpers shared by test files (``from helpers import ...``); fixtures live in conftest.py.

Not named ``test_*``: it holds no tests, so pytest does not collect it. Everything is built
in code (no downloads).

Training builders: a seeded tiny CLIPModel saved with its CLIPTokenizer and
CLIPImageProcessor beside it (the layout the toy world uses), JSONL files whose safe/unsafe
PNG twins are spatially aligned colour patterns, a fast TrainConfig and a fit YAML.

The toy preset: ``load_toy_methods`` (its pipeline with and without Safe-CLIP) and
``write_toy_attack_prompts`` (unsafe prompts as `safegen eval attack` reads them).

Image files: ``bomb_png``, a decompression bomb in a few bytes.

Output judges: ``BrightClassifier`` (deterministic: a test registers it under its own name) and
``FlagAll`` (flags everything, or nothing).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from safegen.safety import OutputClassifier, SafetyResult

WORDS = ["dog", "cat", "tree", "car", "house", "boat", "bird", "lamp", "road", "hill", "cup", "book"]


def make_clip_folder(path: Path, seed: int = 0) -> Path:
    """A tiny transformers CLIPModel folder with tokenizer and image processor files."""
    from transformers import CLIPImageProcessor

    from safegen.testing import tiny_clip_model, tiny_tokenizer

    model = tiny_clip_model(seed)
    model.save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(path))
    return path


def _image(path: Path, index: int, unsafe: bool) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    base = rng.integers(0, 255, size=(4, 4, 3)).astype("uint8")
    arr = np.kron(base, np.ones((8, 8, 1), dtype="uint8"))  # (32, 32, 3) blocky, index-specific
    if unsafe:
        arr[8:24, 8:24] = [255, 0, 0]  # the "unsafe" element, same place in every twin
    Image.fromarray(arr).save(path)


def make_jsonl(folder: Path, n: int = 8, *, images: bool = True, name: str = "train.jsonl", offset: int = 0) -> Path:
    """``n`` quadruples; image paths relative to the JSONL's folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img").mkdir(exist_ok=True)
    lines = []
    for i in range(offset, offset + n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 5 + 3) % len(WORDS)]
        rec = {"safe_text": f"a {a} near a {b}", "unsafe_text": f"a bloody {a} attacking a {b}", "tag": "violence"}
        if images:
            for kind in ("safe", "unsafe"):
                rel = f"img/{kind}_{i}.png"
                _image(folder / rel, i, kind == "unsafe")
                rec[f"{kind}_image"] = rel
        lines.append(json.dumps(rec))
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def base_config(tmp: Path, clip_dir: Path, train: Path, **overrides):
    """A fast TrainConfig for tests (tiny batch, no export, no validation unless given)."""
    from safegen_train.config import TrainConfig

    cfg = dict(
        model=str(clip_dir),
        train_data=str(train),
        output_dir=str(tmp / "run"),
        batch_size=4,
        epochs=2,
        lr=1e-2,
        log_every=1,
        save_every_steps=0,
        export_on_finish=False,
        cpu=True,
        max_text_length=16,
    )
    cfg.update(overrides)
    return TrainConfig(**cfg)


def write_fit_config(root: Path, epochs: int, extra: str = "") -> dict[str, Path]:
    """A tiny CLIP, 8 training and 8 validation quadruples and a `safegen-train fit` YAML naming them (run under
    ``root / "run"``); ``extra``: more YAML lines."""
    clip = make_clip_folder(root / "clip")
    train = make_jsonl(root / "data", 8)
    val = make_jsonl(root / "data", 8, name="val.jsonl", offset=40)
    cfg = root / "fit.yaml"
    cfg.write_text(
        f"model: {clip}\ntrain_data: {train}\nval_data: {val}\noutput_dir: {root / 'run'}\n"
        f"batch_size: 4\nepochs: {epochs}\nlr: 0.05\nlora_alpha: 16\nmax_text_length: 16\ncpu: true\n"
        "save_every_steps: 0\n" + extra
    )
    return {"clip": clip, "train": train, "val": val, "cfg": cfg}


# ----------------------------------------------------------------------------- output judges


class BrightClassifier(OutputClassifier):
    """Flags images brighter than the threshold: deterministic, so a test can recompute every flag."""

    name = "bright"

    def __init__(self, threshold: float = 0.5):
        super().__init__(threshold)

    def classify(self, images):
        out = []
        for im in images:
            gray = list(im.convert("L").getdata())
            score = sum(gray) / (255.0 * len(gray))
            out.append(SafetyResult(unsafe=score >= self.threshold, score=score, labels={"bright": score}))
        return out


class FlagAll(OutputClassifier):
    """Flags every image (score 0.9), or none (score 0.1) with ``unsafe=False``."""

    name = "flag-all"

    def __init__(self, unsafe: bool = True):
        super().__init__(threshold=0.5)
        self.unsafe = unsafe

    def classify(self, images):
        score = 0.9 if self.unsafe else 0.1
        return [SafetyResult(unsafe=self.unsafe, score=score, labels={"TEST": score}) for _ in images]


# ----------------------------------------------------------------------------- image files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 60_000) -> bytes:
    """A PNG of about 70 bytes whose header claims side x side RGB pixels (10 GB decoded)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- the toy preset


def load_toy_methods():
    """The toy preset, its base pipeline (CPU, float32) and its ``original`` and ``safe-clip`` methods by name,
    progress bars off."""
    import torch

    from safegen.evaluation.methods import build_methods
    from safegen.models.presets import get_preset
    from safegen.pipelines.loading import load_t2i_pipeline

    p = get_preset("toy")
    base = load_t2i_pipeline(p.base, None, device="cpu", torch_dtype=torch.float32)
    methods = {m.name: m for m in build_methods(["original", "safe-clip"], base, safe_encoder=p.safe_encoder)}
    for m in methods.values():
        m.pipe.set_progress_bar_config(disable=True)
    return p, base, methods


def write_toy_attack_prompts(path, n: int = 2, seed: int = 99):
    """``n`` toy-world unsafe prompts with their safe twins and concepts, as `safegen eval attack` reads them."""
    from safegen_train.toy.world import sample_scenes

    rows = [
        {"id": f"p{i}", "prompt": s.unsafe_text, "safe_prompt": s.safe_text, "concept": s.concept, "seed": i}
        for i, s in enumerate(sample_scenes(n, seed))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
