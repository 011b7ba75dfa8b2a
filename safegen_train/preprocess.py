"""``safegen-train data preprocess``: fill the pre-processed image cache of :mod:`safegen_train.pixel_cache`.

Reads the images of one or more training/validation sources, skips those already cached and
unchanged, and decodes the rest in shards of ``shard_size`` images (``workers`` processes decode
in parallel). Resumable: every finished shard is on disk for good, so a killed run only redoes
the shard it was writing. A damaged shard (truncated, wrong shape, unreadable index) is removed
and its images are decoded again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safegen.core.errors import UsageError
from safegen_train.pixel_cache import (
    PreprocessedImages,
    decode_for_cache,
    processor_settings,
    shard_files,
    unique_images,
)

_logger = logging.getLogger(__name__)
MAX_LISTED = 5


@dataclass
class PreprocessSummary:
    """What a ``preprocess`` run found and did."""

    out: str
    settings_key: str
    images: int = 0
    already_cached: int = 0
    processed: int = 0
    rebuilt_shards: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    shards_written: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "settings_key": self.settings_key,
            "images": self.images,
            "already_cached": self.already_cached,
            "processed": self.processed,
            "shards_written": self.shards_written,
            "rebuilt_shards": self.rebuilt_shards,
            "unreadable": len(self.unreadable),
            "unreadable_first": self.unreadable[:MAX_LISTED],
            "seconds": round(self.seconds, 2),
        }


class _Decode:
    """Map-style dataset for the DataLoader that decodes in worker processes."""

    def __init__(self, paths: list[str], processor: Any):
        self.paths, self.processor = paths, processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        return decode_for_cache(self.paths[i], self.processor)


def _as_is(item: Any) -> Any:
    return item


def preprocess_images(
    paths: list[str], out: str | Path, processor: Any, *, shard_size: int = 1024, workers: int = 0
) -> PreprocessSummary:
    """Cache the uint8 crops of ``paths`` under ``out`` (see the module docstring)."""
    import json

    from torch.utils.data import DataLoader

    from safegen_train.pixel_cache import write_shard

    if shard_size < 1:
        raise UsageError(f"--shard-size must be >= 1 (got {shard_size})")
    if workers < 0:
        raise UsageError(f"--workers must be >= 0 (got {workers})")
    t0 = time.perf_counter()
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' is a file; give a folder for the cache")
    paths = unique_images(paths)
    rebuilt: list[str] = []

    def drop_damaged(npy: Path, exc: Exception) -> None:
        _logger.warning("%s; decoding its images again", exc)
        rebuilt.append(str(npy))
        for stale in (npy.with_suffix(".json"), npy):  # cache-owned files; the index goes first
            with contextlib.suppress(OSError):
                stale.unlink()

    cache = PreprocessedImages(out, processor, on_damaged=drop_damaged, allow_empty=True)
    summary = PreprocessSummary(str(out), cache.key, images=len(paths), rebuilt_shards=rebuilt)
    todo = [p for p in paths if cache.locate(p) is None]
    summary.already_cached = len(paths) - len(todo)
    cache.folder.mkdir(parents=True, exist_ok=True)
    settings = cache.folder / "settings.json"
    if not settings.is_file():
        from safegen.core.io import atomic_write_text

        atomic_write_text(settings, json.dumps(processor_settings(processor), indent=2, sort_keys=True) + "\n")
    numbers = [int(p.stem.split("-")[1]) for p in shard_files(cache.folder)]
    number = max(numbers, default=-1) + 1
    loader = DataLoader(_Decode(todo, processor), batch_size=None, collate_fn=_as_is, num_workers=workers)
    crops, rows = [], []
    for crop, info in loader:
        if crop is None:
            summary.unreadable.append(info)
            continue
        crops.append(crop)
        rows.append(info)
        if len(crops) == shard_size:
            write_shard(cache.folder, number, crops, rows)
            summary.processed += len(crops)
            summary.shards_written += 1
            number, crops, rows = number + 1, [], []
            _logger.info("preprocessed %d/%d images", summary.processed, len(todo))
    if crops:
        write_shard(cache.folder, number, crops, rows)
        summary.processed += len(crops)
        summary.shards_written += 1
    if summary.unreadable:
        _logger.warning(
            "%d image(s) could not be read and are not cached (training will report them): %s",
            len(summary.unreadable),
            "; ".join(summary.unreadable[:MAX_LISTED]),
        )
    summary.seconds = time.perf_counter() - t0
    return summary


def images_of_sources(
    sources: list[str],
    *,
    split: str = "train",
    coco_root: str | None = None,
    unsafe_image_root: str | None = None,
    skip_bad: bool = False,
) -> list[str]:
    """Every safe and unsafe image path of the given training/validation sources."""
    from safegen_train.data import load_records

    paths: list[str] = []
    for source in sources:
        if not Path(source).expanduser().exists():
            raise UsageError(f"data '{source}' does not exist; give a .jsonl, a ViSU .json or a dataset folder")
        records = load_records(
            source, split=split, coco_root=coco_root, unsafe_image_root=unsafe_image_root, skip_bad=skip_bad
        )
        paths += [p for r in records for p in (r.safe_image, r.unsafe_image) if p]
    if not paths:
        raise UsageError(f"no images in {', '.join(sources)}: there is nothing to preprocess (text-only data)")
    return paths
