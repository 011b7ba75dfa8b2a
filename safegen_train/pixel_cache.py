"""Pre-processed training images: each image decoded, resized and cropped once, kept as uint8 shards.

Why: decoding a 512 px JPEG/PNG and resizing it with bicubic filtering costs milliseconds of CPU per
image, and a Safe-CLIP quadruple has two images, so a few CPU cores cannot feed a GPU step (see
``benchmarks/dataloader_throughput.py``). The cache does that work once; training then reads a
224x224 uint8 crop from a memory-mapped ``.npy`` file and only rescales and normalises it.

What is stored: the image processor's output *before* rescaling and normalisation (8-bit
integers, exactly what the processor computes in between), so normalising on the fly gives the
same tensors as the uncached path. Layout, one folder per processor setting::

    CACHE/<settings key>/settings.json               the resize/crop settings the key stands for
    CACHE/<settings key>/shard-00000-1a2b3c4d.npy    uint8 (n, 3, H, W), numpy format (never pickle)
    CACHE/<settings key>/shard-00000-1a2b3c4d.json   its images: [real path, size, mtime_ns, sha256] per row

A shard's ``.json`` is written after its ``.npy`` (each through a temporary file and a rename), so
a killed run leaves either a complete shard or none, and ``preprocess`` resumes where it stopped.
An image counts as cached when its size and mtime match its row, or else when its bytes still have
the recorded SHA-256 (the results-bound-to-inputs rule of :mod:`safegen.core.fingerprint`): an edited
image is decoded again, never served stale. Entries are found by the image's real path (hashing
every image at each start would cost as much as reading the whole dataset), so images moved to
another folder are decoded until ``preprocess`` runs again. A later shard's row for the same
path supersedes an earlier one. Each shard's name carries a random token, so two ``preprocess``
runs on the same folder at once never pair one run's pixels with the other's index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from safegen.data.quadruples import DataError

# 2: images decoded by safegen.data.image_io.load_image, which applies EXIF orientation (1 did not), so
# crops cached by 1 would differ from the live path for rotated photos; the key change drops them.
FORMAT = 2
# Applied on the fly from the live processor, so they are not part of what a cached crop depends on.
_ON_THE_FLY = {"do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std"}
_NOT_SETTINGS = {"processor_class", "_processor_class"}
_SHARD_RE = re.compile(r"^shard-(\d{5,})-[0-9a-f]{8}\.(npy|json)$")


def processor_settings(processor: Any) -> dict[str, Any]:
    """The processor's settings that decide the uint8 crop (resize, crop, resampling, RGB conversion)."""
    raw = processor.to_dict() if hasattr(processor, "to_dict") else dict(vars(processor))
    keep = {k: v for k, v in raw.items() if k not in _ON_THE_FLY and k not in _NOT_SETTINGS}
    return json.loads(json.dumps(keep, sort_keys=True, default=str))


def settings_key(processor: Any) -> str:
    """Short key of what decides a crop (the cache subfolder's name): :func:`processor_settings` and
    the crop the processor makes of a fixed probe picture. The probe binds the cache to the resize
    code as well as its settings: a library upgrade that resizes differently (transformers 5 moved
    CLIP from PIL to torchvision) gets a new key instead of serving crops the new code would not make.
    """
    probe = np.random.default_rng(0).integers(0, 256, size=(257, 300, 3), dtype=np.uint8)
    probe_crop = crop_uint8(processor, probe)
    text = json.dumps({"format": FORMAT, **processor_settings(processor)}, sort_keys=True)
    h = hashlib.sha256(text.encode())
    h.update(str(probe_crop.shape).encode() + probe_crop.tobytes())
    return h.hexdigest()[:16]


def crop_uint8(processor: Any, image: Any) -> np.ndarray:
    """(3, H, W) uint8: what ``processor`` makes of ``image`` before rescaling and normalising."""
    out = processor(images=[image], do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
    if out.dtype != np.uint8:
        rounded = np.rint(out)
        if not np.array_equal(rounded, out) or out.min() < 0 or out.max() > 255:
            raise DataError(
                f"image processor {type(processor).__name__} does not keep 8-bit pixels before normalising; "
                "its output cannot be cached exactly (train without preprocessed_cache)"
            )
        out = rounded.astype(np.uint8)
    return np.ascontiguousarray(out)


def normalise(pixels: Any, processor: Any) -> Any:
    """Float32 (B, 3, H, W) from uint8 crops, exactly as ``processor`` would rescale and normalise them.

    Rescaling and normalising act on each value of a channel alone, so each channel has 256
    possible outputs: they are computed once by the processor itself (whatever its backend's
    arithmetic) and looked up, which gives the uncached path's numbers bit for bit, and faster.
    """
    import torch

    x = np.asarray(pixels)
    lut = _lookup_table(processor)
    if lut.shape[0] != x.shape[1]:
        raise DataError(f"cached crops have {x.shape[1]} channels, the image processor makes {lut.shape[0]}")
    out = np.empty(x.shape, dtype=np.float32)
    for c in range(x.shape[1]):
        np.take(lut[c], x[:, c], out=out[:, c])
    return torch.from_numpy(out)


_LUTS: dict[str, np.ndarray] = {}


def _lookup_table(processor: Any) -> np.ndarray:
    """(channels, 256) float32: what the processor's rescale and normalise make of each 8-bit value."""
    raw = processor.to_dict() if hasattr(processor, "to_dict") else dict(vars(processor))
    key = json.dumps({k: raw.get(k) for k in sorted(_ON_THE_FLY)}, default=str) + type(processor).__name__
    lut = _LUTS.get(key)
    if lut is None:
        # A 16x16 RGB picture holding every 8-bit value once per channel, neither resized nor cropped.
        ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
        picture = np.repeat(ramp[:, :, None], 3, axis=2)
        out = processor(
            images=[picture],
            do_resize=False,
            do_center_crop=False,
            input_data_format="channels_last",
            return_tensors="np",
        )["pixel_values"][0]
        lut = _LUTS[key] = np.ascontiguousarray(out.reshape(out.shape[0], 256), dtype=np.float32)
    return lut


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_shard(npy: Path, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """The shard memory-mapped, or a DataError naming it when it is missing, truncated or the wrong shape."""
    try:
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"preprocessed shard '{npy}' is damaged ({str(exc).splitlines()[0]})") from None
    if arr.dtype != np.uint8 or tuple(arr.shape) != (count, *shape):
        raise DataError(
            f"preprocessed shard '{npy}' is damaged (holds {arr.dtype} {tuple(arr.shape)}, "
            f"its index says uint8 {(count, *shape)})"
        )
    return arr


def read_shard_index(meta: Path) -> dict[str, Any]:
    """One shard's ``.json``; a DataError naming it when it is unreadable."""
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        rows = data["images"]
        shape = tuple(int(d) for d in data["shape"])
        if data.get("format") != FORMAT or not isinstance(rows, list) or len(shape) != 3:
            raise ValueError("unexpected layout")
        for row in rows:  # [real path, size, mtime_ns, sha256]
            if not (isinstance(row, list) and len(row) == 4 and isinstance(row[0], str) and isinstance(row[3], str)):
                raise ValueError(f"bad row {str(row)[:80]}")
            int(row[1]), int(row[2])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"preprocessed shard index '{meta}' is damaged ({exc})") from None
    return {"images": rows, "shape": shape}


def shard_files(folder: Path) -> list[Path]:
    """The folder's shard ``.json`` files in write order (a later one supersedes an earlier one)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _SHARD_RE.match(p.name) and p.suffix == ".json")


class PreprocessedImages:
    """Read side: finds an image's cached crop (if still valid) and reads it from its memory-mapped shard.

    Every shard is checked when the cache is opened, so a damaged one stops training before it
    starts with one line naming it. Memory maps are opened lazily in each process (DataLoader
    workers included) and never pickled.
    """

    def __init__(
        self,
        root: str | Path,
        processor: Any,
        *,
        on_damaged: Callable[[Path, DataError], None] | None = None,
        allow_empty: bool = False,
    ):
        """``on_damaged``: called with a damaged shard instead of raising (``preprocess`` rebuilds it)."""
        self.root = Path(root).expanduser()
        self.key = settings_key(processor)
        self.folder = self.root / self.key
        metas = shard_files(self.folder)
        if not metas and not allow_empty:
            raise DataError(
                f"'{self.root}' holds no preprocessed images for this model's image processor (settings "
                f"{self.key}); run `safegen-train data preprocess DATA --model MODEL --out {self.root}` first"
            )
        self.shape: tuple[int, ...] | None = None
        self.rows: dict[str, tuple[int, int, str, str, int]] = {}
        self.shards: list[Path] = []
        for meta in metas:
            npy = meta.with_suffix(".npy")
            try:
                index = read_shard_index(meta)
                _check_shard(npy, len(index["images"]), index["shape"])
            except DataError as exc:
                if on_damaged is None:
                    raise DataError(f"{exc}; run `safegen-train data preprocess` again to rebuild it") from None
                on_damaged(npy, exc)
                continue
            self.shape = index["shape"]
            for row, (path, size, mtime_ns, sha) in enumerate(index["images"]):
                self.rows[path] = (int(size), int(mtime_ns), sha, npy.name, row)
            self.shards.append(npy)
        self._maps: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}  # memory maps are reopened in the worker process
        return state

    def locate(self, path: str) -> tuple[str, int] | None:
        """(shard name, row) of ``path``'s crop, or None when it is not cached or the file changed since."""
        real = os.path.realpath(path)
        entry = self.rows.get(real)
        if entry is None:
            return None
        size, mtime_ns, sha, shard, row = entry
        try:
            st = os.stat(real)
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns) == (size, mtime_ns) or (st.st_size == size and file_sha256(real) == sha):
            return shard, row
        return None

    def read(self, where: tuple[str, int]) -> np.ndarray:
        """The uint8 (3, H, W) crop at ``where`` (a copy, so the batch owns its memory)."""
        shard, row = where
        arr = self._maps.get(shard)
        if arr is None:
            arr = self._maps[shard] = np.load(self.folder / shard, mmap_mode="r", allow_pickle=False)
        return np.array(arr[row])


# ----------------------------------------------------------------------------- write side


def _atomic_save(path: Path, write: Callable[[Any], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        from safegen.core.io import apply_umask

        apply_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_shard(folder: Path, number: int, crops: list[np.ndarray], images: list[list[Any]]) -> Path:
    """Write ``shard-<number>-<token>.npy`` then its ``.json`` (the commit marker), each atomically."""
    npy = folder / f"shard-{number:05d}-{os.urandom(4).hex()}.npy"
    stacked = np.stack(crops)
    _atomic_save(npy, lambda fh: np.save(fh, stacked, allow_pickle=False))
    meta = {"format": FORMAT, "shape": list(stacked.shape[1:]), "images": images}
    _atomic_save(npy.with_suffix(".json"), lambda fh: fh.write(json.dumps(meta).encode()))
    return npy


def decode_for_cache(path: str, processor: Any) -> tuple[np.ndarray | None, list[Any] | str]:
    """(crop, [real path, size, mtime_ns, sha256]) for one image, or (None, reason) when it cannot be read."""
    from safegen.data.image_io import ImageLoadError, load_image

    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        data = Path(real).read_bytes()
        # The bytes hashed are the bytes decoded, by the loader the live (uncached) path uses.
        crop = crop_uint8(processor, load_image(path, data=data))
    except DataError:
        raise
    except ImageLoadError as exc:
        return None, str(exc)  # already "path: what is wrong; what to do"
    except Exception as exc:  # noqa: BLE001 - one unreadable image is reported, not fatal to the rest
        return None, f"{path}: {type(exc).__name__}: {exc}"
    return crop, [real, st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest()]


def unique_images(paths: Iterable[str | None]) -> list[str]:
    """Real paths of the given images, each once, in first-seen order."""
    seen: dict[str, None] = {}
    for p in paths:
        if p:
            seen.setdefault(os.path.realpath(p), None)
    return list(seen)
