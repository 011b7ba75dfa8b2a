"""Training data: safe/unsafe quadruples from JSONL, the official ViSU JSON, or a datasets source.

The file formats are read by :mod:`safegen.data.quadruples` (shared with evaluation); this
module adds datasets sources, extra unsafe texts, the torch dataset, collator and sampler.
Text-only records are first-class: a dataset is either all-with-images or text-only per image kind (safe,
unsafe), so every batch trains the same set of terms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from safegen.data.quadruples import (
    MAX_LISTED,
    DataError,
    Record,
    RecordProblems,
    read_jsonl,
    read_visu,
    record_from_mapping,
)
from safegen_train.pixel_cache import normalise

_logger = logging.getLogger(__name__)


def read_hf_dataset(source: str, split: str, *, skip_bad: bool = False) -> list[Record]:
    """Read a Hugging Face dataset (hub id in the local cache, or a folder) with text columns.

    Columns ``safe_text``/``unsafe_text`` or ViSU-Text's ``safe``/``nsfw`` (plus ``tag``).
    Images are not read from datasets sources: they train text-only.
    """
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"reading '{source}' as a Hugging Face dataset needs the datasets package (pip install datasets); "
            "or export it to JSONL"
        ) from exc
    from safegen import load_or_explain

    ds = load_or_explain(source, lambda: datasets.load_dataset(source, split=split))
    problems, records, bad = RecordProblems(f"{source}[{split}]"), [], set()
    for i, row in enumerate(ds):
        rec, reason = record_from_mapping(dict(row), f"{source}[{split}]#{i}", Path("."), False)
        if rec is None:
            problems.add(f"row {i}", reason or "bad record")
            continue
        records.append(rec)
    return problems.finish(records, bad, skip_bad=skip_bad)


def load_records(
    source: str | Path,
    *,
    split: str = "train",
    coco_root: str | Path | None = None,
    unsafe_image_root: str | Path | None = None,
    skip_bad: bool = False,
    images: str = "auto",
) -> list[Record]:
    """Read any supported source and check its image modalities are consistent.

    ``.jsonl`` -> :func:`read_jsonl`; ``.json`` -> :func:`read_visu`; a folder with
    ``<split>.jsonl`` -> that file; anything else -> :func:`read_hf_dataset`.
    ``images="ignore"`` drops every image path (text-only training).
    """
    check = images != "ignore"
    path = Path(str(source)).expanduser()
    if path.suffix == ".jsonl":
        records = read_jsonl(path, skip_bad=skip_bad, check_images=check)
    elif path.suffix == ".json":
        records = read_visu(
            path, coco_root=coco_root, unsafe_image_root=unsafe_image_root, skip_bad=skip_bad, check_images=check
        )
    elif path.is_dir() and (path / f"{split}.jsonl").is_file():
        records = read_jsonl(path / f"{split}.jsonl", skip_bad=skip_bad, check_images=check)
    else:
        records = read_hf_dataset(str(source), split, skip_bad=skip_bad)
    return check_modalities(records, str(source), skip_bad=skip_bad)


def add_extra_unsafe_texts(
    records: list[Record], path: str | Path, *, repeat: int = 1, skip_bad: bool = False
) -> list[Record]:
    """Adversarial rounds: ``records`` plus attack-found unsafe texts paired with their safe texts.

    ``path`` is a JSONL of ``{unsafe_text, safe_text, tag?}`` (``safegen eval attack`` writes one,
    ``adversarial_texts.jsonl``). When the training records carry images, each extra text
    borrows the images of a record with the same ``safe_text`` (so the image terms see the
    right scene); a text with no such record is refused (or dropped with ``skip_bad``).
    Text-only records get text-only extras. Each extra is added ``repeat`` times.
    """
    import dataclasses

    path = Path(path)
    extras = read_jsonl(path, skip_bad=skip_bad, check_images=False)
    with_images = bool(records) and (records[0].safe_image is not None or records[0].unsafe_image is not None)
    by_safe: dict[str, Record] = {}
    for rec in records:
        by_safe.setdefault(rec.safe_text.strip().lower(), rec)
    added, missing = [], []
    for extra in extras:
        twin = by_safe.get(extra.safe_text.strip().lower())
        if with_images and twin is None:
            missing.append(extra.where)
            continue
        new = dataclasses.replace(
            twin if twin is not None else extra,
            unsafe_text=extra.unsafe_text,
            safe_text=twin.safe_text if twin is not None else extra.safe_text,
            tag=extra.tag or (twin.tag if twin is not None else None),
            where=extra.where,
        )
        added += [new] * repeat
    if missing:
        listed = ", ".join(missing[:MAX_LISTED])
        if not skip_bad:
            raise DataError(
                f"'{path}': {len(missing)} extra unsafe texts have no training record with the same safe_text to "
                f"take images from ({listed}); add those records, set skip_bad_records, or train text-only"
            )
        _logger.warning(
            "dropping %d extra unsafe texts of '%s' without a matching record (%s)", len(missing), path, listed
        )
    _logger.info(
        "adversarial rounds: %d extra unsafe texts from '%s' (x%d)", len(added) // max(1, repeat), path, repeat
    )
    return list(records) + added


def check_modalities(records: list[Record], source: str, *, skip_bad: bool = False) -> list[Record]:
    """Every record must agree on having a safe image and on having an unsafe one.

    Mixed data would train different terms in different batches; it is refused (naming
    the odd records) or, with ``skip_bad``, the minority is dropped.
    """
    for attr in ("safe_image", "unsafe_image"):
        have = [r for r in records if getattr(r, attr)]
        if have and len(have) != len(records):
            lacking = [r for r in records if not getattr(r, attr)]
            minority, label = (lacking, f"lack {attr}") if len(lacking) <= len(have) else (have, f"have {attr}")
            listed = ", ".join(r.where for r in minority[:MAX_LISTED])
            if not skip_bad:
                raise DataError(
                    f"'{source}' mixes records with and without {attr}: {len(minority)} {label} ({listed}); "
                    "give every record the image, drop them (skip_bad_records) or train text-only (images: ignore)"
                )
            _logger.warning("dropping %d records of '%s' that %s (%s)", len(minority), source, label, listed)
            drop = {id(r) for r in minority}
            records = [r for r in records if id(r) not in drop]
    if not records:
        raise DataError(f"no usable records in '{source}'")
    return records


# ----------------------------------------------------------------------------- torch side


class PairDataset:
    """Map-style dataset of records; items carry their index (for cached reference lookups)."""

    def __init__(self, records: Sequence[Record]):
        self.records = list(records)
        self.has_safe_image = bool(self.records) and self.records[0].safe_image is not None
        self.has_unsafe_image = bool(self.records) and self.records[0].unsafe_image is not None
        self.preprocessed: Any = None  # a pixel_cache.PreprocessedImages, see use_preprocessed
        self._cached: dict[str, list[Any]] = {}

    def use_preprocessed(self, cache: Any) -> tuple[int, int]:
        """Read images from ``cache`` (a :class:`~safegen_train.pixel_cache.PreprocessedImages`) where it
        holds them unchanged; the rest are decoded as before. Returns (images found, images in the data)."""
        self.preprocessed, self._cached, found, total = cache, {}, 0, 0
        for attr in ("safe_image", "unsafe_image"):
            if not getattr(self, f"has_{attr}"):
                continue
            seen: dict[str, Any] = {}  # an image shared by several records is checked once
            for path in (getattr(r, attr) for r in self.records):
                if path not in seen:
                    seen[path] = cache.locate(path)
            where = [seen[getattr(r, attr)] for r in self.records]
            self._cached[attr] = where
            found += sum(w is not None for w in where)
            total += len(where)
        return found, total

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, attr: str, index: int) -> Any:
        rec = self.records[index]
        where = self._cached[attr][index] if attr in self._cached else None
        if where is not None:
            return self.preprocessed.read(where)  # uint8 (3, H, W): the Collator only normalises it
        return _open_image(getattr(rec, attr), rec.where)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        item: dict[str, Any] = {"index": index, "safe_text": rec.safe_text, "unsafe_text": rec.unsafe_text}
        if self.has_safe_image:
            item["safe_image"] = self._image("safe_image", index)
        if self.has_unsafe_image:
            item["unsafe_image"] = self._image("unsafe_image", index)
        return item


def _open_image(path: str | None, where: str):
    """Through safegen's one image loader, so training sees what inference sees (EXIF turn, size limit)."""
    from safegen.data.image_io import ImageLoadError, load_image

    try:
        return load_image(str(path))
    except ImageLoadError as exc:
        raise DataError(f"{where}: cannot read image '{exc.path}': {exc.reason}") from None


class Collator:
    """Tokenise captions (padded to ``max_length``, as CLIP was trained) and preprocess images."""

    def __init__(self, tokenizer: Any, image_processor: Any | None, max_length: int):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_length = max_length

    def _tokens(self, texts: list[str]) -> dict[str, Any]:
        enc = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}  # (B, L) each

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {"index": torch.tensor([it["index"] for it in items])}
        safe = self._tokens([it["safe_text"] for it in items])
        unsafe = self._tokens([it["unsafe_text"] for it in items])
        batch["safe_input_ids"], batch["safe_attention_mask"] = safe["input_ids"], safe["attention_mask"]
        batch["unsafe_input_ids"], batch["unsafe_attention_mask"] = unsafe["input_ids"], unsafe["attention_mask"]
        for key in ("safe_image", "unsafe_image"):
            if key in items[0]:
                if self.image_processor is None:
                    raise DataError("records have images but no image processor was found for the model")
                batch[f"{key}_pixels"] = pixel_values([it[key] for it in items], self.image_processor)
        return batch


def pixel_values(images: list[Any], processor: Any) -> Any:
    """Float (B, 3, H, W) pixels for decoded images and cached uint8 crops alike, in their order.

    Decoded (PIL) images go through the processor; cached crops (numpy uint8, already resized
    and cropped by the same processor) are only rescaled and normalised, which gives the same
    tensors (see :mod:`safegen_train.pixel_cache`).
    """
    import numpy as np
    import torch

    cached = [i for i, im in enumerate(images) if isinstance(im, np.ndarray)]
    if not cached:
        return processor(images=images, return_tensors="pt")["pixel_values"]
    fast = normalise(np.stack([images[i] for i in cached]), processor)
    if len(cached) == len(images):
        return fast
    done = set(cached)
    rest = [i for i in range(len(images)) if i not in done]
    slow = processor(images=[images[i] for i in rest], return_tensors="pt")["pixel_values"]
    out = torch.empty((len(images), *fast.shape[1:]), dtype=fast.dtype)
    out[cached], out[rest] = fast, slow.to(fast.dtype)
    return out


class ShardedBatchSampler:
    """Yields this process's slice of each global micro-batch, in a seeded per-epoch order.

    All processes draw the same permutation (seed + epoch), cut it into global micro-batches
    of ``global_micro_batch`` (the last partial one dropped: contrastive terms want full
    batches and processes must agree on sizes), and take slice ``rank`` of each. Starting at
    ``start`` micro-batches skips what a resumed run already consumed.
    """

    def __init__(
        self,
        num_items: int,
        global_micro_batch: int,
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_micro_batch % world:
            raise DataError(f"micro-batch {global_micro_batch} does not split evenly across {world} processes")
        if num_items < global_micro_batch:
            raise DataError(
                f"{num_items} training records are fewer than one micro-batch ({global_micro_batch}); "
                "lower batch_size or add data"
            )
        self.num_items, self.global_micro_batch = num_items, global_micro_batch
        self.rank, self.world, self.seed, self.shuffle = rank, world, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_items // self.global_micro_batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        import torch

        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=gen).tolist()
        else:
            order = list(range(self.num_items))
        per = self.global_micro_batch // self.world
        for b in range(self.start, self.num_items // self.global_micro_batch):
            chunk = order[b * self.global_micro_batch : (b + 1) * self.global_micro_batch]
            yield chunk[self.rank * per : (self.rank + 1) * per]


# ----------------------------------------------------------------------------- loss-term coverage

# What each loss term reads besides text (the images it needs) and which trained tower it
# updates; a term whose tower is not trained drops out of the loss, so it is not counted.
TERM_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "text_safe": ((), "text"),
    "text_unsafe": ((), "text"),
    "vision_safe": (("safe_image",), "vision"),
    "vision_unsafe": (("safe_image", "unsafe_image"), "vision"),
    "safe_text_vs_ref_image": (("safe_image",), "text"),
    "unsafe_text_vs_ref_image": (("safe_image",), "text"),
    "ref_text_vs_safe_image": (("safe_image",), "vision"),
    "ref_text_vs_unsafe_image": (("unsafe_image",), "vision"),
    "vision_patch_safe": (("safe_image",), "vision"),
    "vision_patch_unsafe": (("safe_image", "unsafe_image"), "vision"),
    "text_tokens_safe": ((), "text"),
    "text_tokens_unsafe": ((), "text"),
    "text_tokens_follow": ((), "text"),
}


def term_sample_counts(records: Sequence[Record], loss: Any, towers: Sequence[str]) -> dict[str, int]:
    """Records feeding each loss term that is on (weight > 0) and whose tower is trained."""
    counts = {}
    for term, (needs, tower) in TERM_NEEDS.items():
        if float(getattr(loss, term, 0.0) or 0.0) <= 0 or tower not in towers:
            continue
        counts[term] = sum(1 for r in records if all(getattr(r, attr) for attr in needs))
    return counts


def check_term_coverage(counts: dict[str, int], source: str, *, text_only: bool, allow_empty: bool) -> None:
    """Refuse a run whose enabled loss terms would see no samples, unless text-only or allowed.

    Missing unsafe images silently remove terms 4 and 8 (40% of the released weight) and
    with them what the vision tower learns; this says so before any training happens.
    ``text_only``: the run asked for text only, so image terms without samples are expected.
    """
    empty = sorted(term for term, n in counts.items() if n == 0)
    if text_only:
        empty = [t for t in empty if not TERM_NEEDS[t][0]]
    if not empty:
        return
    if allow_empty:
        _logger.warning("loss terms with no samples (allowed by allow_empty_loss_terms): %s", ", ".join(empty))
        return
    raise DataError(
        f"'{source}': enabled loss terms get no samples: {', '.join(empty)} (their images are missing); "
        "supply the images (coco_root, unsafe_image_root), set those weights to 0, train text-only "
        "(images: ignore), or pass allow_empty_loss_terms: true"
    )
