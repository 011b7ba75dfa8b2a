"""The pre-processed image cache: same training tensors as decoding, invalidation, damage, CLI errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_clip_folder

from safegen_train.data import Collator, DataError, PairDataset, load_records
from safegen_train.pixel_cache import PreprocessedImages, processor_settings, settings_key
from safegen_train.preprocess import preprocess_images


def _vit_l_processor():
    """openai/clip-vit-large-patch14's preprocessing (224 px, bicubic, OpenAI mean/std), built in code."""
    from transformers import CLIPImageProcessor

    from safegen_train.model import OPENAI_MEAN, OPENAI_STD

    return CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    )


def _picture(path: Path, seed: int, size: tuple[int, int], mode: str = "RGB") -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * (seed + 3)) % 256, (yy * 7) % 256, ((xx + yy) * 5) % 256], -1).astype(np.uint8)
    arr = np.clip(arr.astype(int) + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).convert(mode).save(path)


def _data(folder: Path, n: int = 4) -> Path:
    """Quadruples whose images have realistic shapes and formats: JPEG 320x240, PNG 256x256, grey, RGBA."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = [
        ((320, 240), "RGB", "jpg"),
        ((256, 256), "RGB", "png"),
        ((200, 300), "L", "jpg"),
        ((260, 250), "RGBA", "png"),
    ]
    lines = []
    for i in range(n):
        rec = {"safe_text": f"a dog {i}", "unsafe_text": f"a bloody dog {i}"}
        for j, kind in enumerate(("safe", "unsafe")):
            size, mode, ext = shapes[(i + j) % len(shapes)]
            name = f"{kind}_{i}.{ext}"
            _picture(folder / name, 10 * i + j, size, mode)
            rec[f"{kind}_image"] = name
        lines.append(json.dumps(rec))
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


class _NoTokens:
    """Stands in for the tokenizer: these tests compare pixels only."""

    def __call__(self, texts, **_):
        return {"input_ids": torch.zeros(len(texts), 2, dtype=torch.long), "attention_mask": torch.ones(len(texts), 2)}


def _pixels(records, processor, cache=None) -> dict[str, torch.Tensor]:
    ds = PairDataset(records)
    if cache is not None:
        ds.use_preprocessed(cache)
    batch = Collator(_NoTokens(), processor, 2)([ds[i] for i in range(len(ds))])
    return {k: v for k, v in batch.items() if k.endswith("_pixels")}


def _paths(records):
    return [p for r in records for p in (r.safe_image, r.unsafe_image)]


def test_cached_tensors_equal_decoded_ones_at_vit_l_preprocessing(tmp_path):
    records = load_records(_data(tmp_path / "d", 6))  # 6: same-shape images share a batch too
    processor = _vit_l_processor()
    summary = preprocess_images(_paths(records), tmp_path / "cache", processor, shard_size=5)
    assert (summary.images, summary.processed, summary.shards_written) == (12, 12, 3)
    cache = PreprocessedImages(tmp_path / "cache", processor)
    ds = PairDataset(records)
    assert ds.use_preprocessed(cache) == (12, 12)
    assert isinstance(ds[0]["safe_image"], np.ndarray) and ds[0]["safe_image"].dtype == np.uint8
    plain, cached = _pixels(records, processor), _pixels(records, processor, cache)
    assert set(plain) == {"safe_image_pixels", "unsafe_image_pixels"}
    for key in plain:
        assert cached[key].shape == plain[key].shape == (6, 3, 224, 224)
        assert cached[key].dtype == plain[key].dtype == torch.float32
        torch.testing.assert_close(cached[key], plain[key], rtol=0, atol=1e-6)
        assert torch.equal(cached[key], plain[key])  # in fact bit for bit: the same arithmetic
    # resumable: a second run finds everything and writes nothing
    again = preprocess_images(_paths(records), tmp_path / "cache", processor)
    assert (again.already_cached, again.processed, again.shards_written) == (12, 0, 0)


def test_other_processor_settings_do_not_see_the_cache(tmp_path):
    from transformers import CLIPImageProcessor

    records = load_records(_data(tmp_path / "d", 1))
    processor = _vit_l_processor()
    preprocess_images(_paths(records), tmp_path / "cache", processor)
    other = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    assert settings_key(other) != settings_key(processor)
    with pytest.raises(DataError, match="no preprocessed images for this model's image processor"):
        PreprocessedImages(tmp_path / "cache", other)
    # mean/std are applied on the fly, so they do not split the cache
    shifted = _vit_l_processor()
    shifted.image_mean = [0.5, 0.5, 0.5]
    assert settings_key(shifted) == settings_key(processor)


def test_resize_code_that_changes_gets_a_new_key(monkeypatch):
    """Same settings, different resize results (as after a library upgrade): not the same cache."""
    processor = _vit_l_processor()
    before = settings_key(processor)
    cls = type(processor)
    original = cls.resize
    monkeypatch.setattr(cls, "resize", lambda self, *a, **k: torch.flip(original(self, *a, **k), dims=[-1]))
    assert processor_settings(processor) == processor_settings(_vit_l_processor())
    assert settings_key(processor) != before


def test_edited_image_is_decoded_again_not_served_stale(tmp_path):
    records = load_records(_data(tmp_path / "d"))
    processor = _vit_l_processor()
    preprocess_images(_paths(records), tmp_path / "cache", processor)
    edited = Path(records[1].unsafe_image)
    _picture(edited, 99, (256, 256))  # new content, same format
    touched = Path(records[2].safe_image)
    os.utime(touched, ns=(1_000_000_000, 1_000_000_000))  # new mtime, same bytes: still valid by content
    cache = PreprocessedImages(tmp_path / "cache", processor)
    assert cache.locate(str(edited)) is None
    assert cache.locate(str(touched)) is not None
    ds = PairDataset(records)
    assert ds.use_preprocessed(cache) == (7, 8)
    plain, cached = _pixels(records, processor), _pixels(records, processor, cache)
    for key in plain:
        torch.testing.assert_close(cached[key], plain[key], rtol=0, atol=1e-6)  # the mixed batch is still right
    again = preprocess_images(_paths(records), tmp_path / "cache", processor)
    assert (again.already_cached, again.processed) == (7, 1)
    assert PreprocessedImages(tmp_path / "cache", processor).locate(str(edited)) is not None


def test_damaged_shard_is_named_in_one_line_and_rebuilt_by_preprocess(tmp_path):
    records = load_records(_data(tmp_path / "d"))
    processor = _vit_l_processor()
    preprocess_images(_paths(records), tmp_path / "cache", processor, shard_size=4)
    shard = sorted((tmp_path / "cache" / settings_key(processor)).glob("shard-00001-*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[:4096])  # truncated, as by a full disk
    with pytest.raises(DataError) as err:
        PreprocessedImages(tmp_path / "cache", processor)
    msg = str(err.value)
    assert str(shard) in msg and "damaged" in msg and "preprocess" in msg and "\n" not in msg
    summary = preprocess_images(_paths(records), tmp_path / "cache", processor, shard_size=4)
    assert summary.rebuilt_shards == [str(shard)]
    assert (summary.already_cached, summary.processed) == (4, 4)
    cache = PreprocessedImages(tmp_path / "cache", processor)
    for key, value in _pixels(records, processor).items():
        torch.testing.assert_close(_pixels(records, processor, cache)[key], value, rtol=0, atol=1e-6)
    # an index whose rows are not [path, size, mtime, sha256] is damaged too, not a traceback
    index = sorted((tmp_path / "cache" / settings_key(processor)).glob("shard-*.json"))[0]
    meta = json.loads(index.read_text())
    meta["images"][0] = ["only a path"]
    index.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=f"shard index '{index}' is damaged"):
        PreprocessedImages(tmp_path / "cache", processor)
    assert preprocess_images(_paths(records), tmp_path / "cache", processor).processed == 4


def test_unreadable_image_is_reported_not_cached_and_training_still_names_it(tmp_path):
    records = load_records(_data(tmp_path / "d", 2))
    broken = Path(records[1].safe_image)
    broken.write_bytes(b"not an image")
    processor = _vit_l_processor()
    summary = preprocess_images(_paths(records), tmp_path / "cache", processor)
    assert (summary.processed, len(summary.unreadable)) == (3, 1) and str(broken) in summary.unreadable[0]
    ds = PairDataset(records)
    assert ds.use_preprocessed(PreprocessedImages(tmp_path / "cache", processor)) == (3, 4)
    with pytest.raises(DataError, match=f"cannot read image '{broken}'"):
        ds[1]


def test_cli_preprocess_and_its_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from safegen_train.cli import app

    clip = make_clip_folder(tmp_path / "clip")
    data = _data(tmp_path / "d", 2)
    runner = CliRunner()
    args = ["data", "preprocess", str(data), "--model", str(clip), "--out", str(tmp_path / "c")]
    ok = runner.invoke(app, [*args, "--workers", "1", "--shard-size", "3"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout.strip().splitlines()[-1])
    assert report["images"] == 4 and report["processed"] == 4 and report["shards_written"] == 2
    assert report["unreadable"] == 0
    bad = [
        ([str(tmp_path / "nope.jsonl")], "does not exist"),
        ([str(data), "--shard-size", "0"], "--shard-size"),
        ([str(data), "--model", str(tmp_path / "d")], "neither a CLIP folder"),
    ]
    for extra, needle in bad:
        args = ["data", "preprocess", *extra, "--out", str(tmp_path / "c")]
        if "--model" not in extra:
            args += ["--model", str(clip)]
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (extra, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], res.stderr


def test_training_reads_the_cache_and_trains_the_same(tmp_path):
    from helpers import base_config

    from safegen_train.model import load_image_processor
    from safegen_train.trainer import fit

    clip = make_clip_folder(tmp_path / "clip")
    data = _data(tmp_path / "d", 4)

    preprocess_images(_paths(load_records(data)), tmp_path / "cache", load_image_processor(str(clip)))
    losses, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from more; a shared machine loses time to them
    try:
        for name, extra in (("plain", {}), ("cached", {"preprocessed_cache": str(tmp_path / "cache")})):
            cfg = base_config(tmp_path / name, clip, data, max_steps=1, epochs=1, **extra)
            fit(cfg)
            rows = [json.loads(x) for x in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
            losses.append([r["loss"] for r in rows if "loss" in r])
    finally:
        torch.set_num_threads(threads)
    assert losses[0] and losses[0] == pytest.approx(losses[1], abs=1e-6)
    missing = base_config(tmp_path / "x", clip, data, preprocessed_cache=str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"preprocessed_cache '.*nope' is not a folder; make it with"):
        fit(missing)
