"""Reading users' image files safely and expanding IMAGE|DIR|GLOB arguments.

Users point the CLI at folders of downloaded images: some are truncated, some are not
images at all, some are decompression bombs (a tiny file that decodes to gigapixels).
Each of these becomes an :class:`ImageLoadError` naming the file and what to do, so a
batch reports the bad file and carries on with the rest.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from safegen.core.errors import SafegenError

if TYPE_CHECKING:
    from PIL import Image

_logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Pillow's own bomb threshold (about 89.5 megapixels, a 1/4 GB RGB bitmap); larger images are refused.
DEFAULT_MAX_PIXELS = 89_478_485
_GLOB_CHARS = frozenset("*?[")


class ImageLoadError(SafegenError):
    """One image file could not be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class ExpandedImages:
    """The files an IMAGE|DIR|GLOB argument list names, and the arguments that named nothing."""

    paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def is_image_name(path: str | Path) -> bool:
    """Whether a file name has one of the image suffixes safegen reads from folders."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def expand_image_args(args: Iterable[str | Path], *, recursive: bool = False) -> ExpandedImages:
    """Expand image arguments into a de-duplicated, ordered list of files.

    - a file is taken as given, whatever its suffix (a non-image is reported when loaded);
    - a folder contributes its image files (by suffix) in name order, sub-folders too with
      ``recursive``;
    - a pattern with ``*``, ``?`` or ``[`` is globbed (``**`` crosses folders);
    - anything that names no file becomes a problem line, so the caller can report it
      and still process the rest.

    Folder walks follow symlinks but enter each real directory once, so a symlink loop
    (``loop -> ..``) cannot make the walk endless.
    """
    out = ExpandedImages()
    seen: set[Path] = set()

    def take(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.paths.append(path)

    for arg in args:
        text = str(arg)
        path = Path(text).expanduser()
        if path.is_file():
            take(path)
        elif path.is_dir():
            found = sorted(p for p in walk_files(path, max_depth=None if recursive else 0) if is_image_name(p))
            if not found:
                out.problems.append(f"{text}: folder has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for p in found:
                take(p)
        elif _GLOB_CHARS & set(text):
            files = glob_files(str(path))
            if not files:
                out.problems.append(f"{text}: pattern matches no files")
            for p in files:
                take(p)
        else:
            out.problems.append(f"{text}: no such file or folder")
    return out


def walk_files(root: str | Path, *, max_depth: int | None = None) -> list[Path]:
    """Files under ``root`` (depth 0: its own files only), following each real directory once.

    ``os.walk(followlinks=True)`` alone loops forever on ``a/loop -> a``; remembering the
    (device, inode) of every directory entered stops that, and a directory reached twice
    through links is read once. Unreadable folders are skipped.
    """
    root = Path(root)
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()
    base_depth = len(root.parts)
    for folder, dirs, names in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            dirs[:] = []
            continue
        seen.add(ident)
        depth = len(Path(folder).parts) - base_depth
        if max_depth is not None and depth >= max_depth:
            dirs[:] = []
        dirs.sort()
        for name in sorted(names):
            p = Path(folder) / name
            if p.is_file():
                files.append(p)
    return files


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob pattern over '/'-separated relative paths (``**`` spans folders)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                body = "^" + body[1:] if body.startswith("!") else body
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_files(pattern: str) -> list[Path]:
    """Files matching a glob pattern, in name order; like ``glob.glob(recursive=True)`` but loop-safe.

    The walk starts at the pattern's longest literal folder and enters each real directory
    once (see :func:`walk_files`); names starting with a dot match only a pattern that says so.
    """
    parts = Path(pattern).parts
    literal = 0
    while literal < len(parts) - 1 and not (_GLOB_CHARS & set(parts[literal])):
        literal += 1
    base = Path(*parts[:literal]) if literal else Path(".")
    rest = "/".join(parts[literal:])
    if not base.is_dir():
        return []
    max_depth = None if "**" in rest else rest.count("/")
    regex = _pattern_regex(rest)
    found = []
    for p in walk_files(base, max_depth=max_depth):
        rel = p.relative_to(base).as_posix()
        hidden = any(seg.startswith(".") for seg in rel.split("/"))
        if hidden and not any(seg.startswith(".") for seg in rest.split("/")):
            continue
        if regex.match(rel):
            found.append(p if literal else Path(rel))
    return sorted(found)


def load_image(
    path: str | Path,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    mode: str = "RGB",
    data: bytes | None = None,
) -> Image.Image:
    """Open, fully decode and convert one image file, or raise :class:`ImageLoadError`.

    Every command that reads a user's image comes through here, so each gets the same
    protections: a size limit checked from the header before any pixel is decoded (a
    58-byte PNG can claim 60,000 x 60,000 pixels), EXIF orientation applied (phones store
    rotated pixels and a tag), and one-line errors naming the file and what to do.

    The whole file is decoded here (not lazily later), so a truncated file fails now with
    its name rather than deep inside a model call. ``data`` decodes bytes already read
    (e.g. to hash them), ``path`` then only names the file in errors. The limit cannot go
    above Pillow's own (``PIL.Image.MAX_IMAGE_PIXELS``, the default here).
    """
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if data is None:
        if not path.exists():
            raise ImageLoadError(path, "no such file; check the path")
        if path.is_dir():
            raise ImageLoadError(path, "is a folder, not an image file; pass the image files (or the folder to i2t)")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its limit; treat every bomb warning as fatal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as im:
                width, height = im.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageLoadError(path, _too_large(f"{width}x{height} pixels", max_pixels))
                im.load()
                image = ImageOps.exif_transpose(im)
                if image.mode != mode:
                    image = _to_mode(image, mode)
                else:
                    image = image.copy()
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(
            path, "not an image Pillow can read (unknown or corrupt format); convert it to PNG or JPEG"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refuses in Image.open, before the size is readable: its own limit is what was exceeded.
        limit = Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS
        limit = min(limit, max_pixels) if max_pixels is not None else limit
        raise ImageLoadError(path, _too_large("its header claims more pixels than Pillow decodes", limit)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow raises OSError("image file is truncated ...") and friends for damaged files.
        raise ImageLoadError(path, f"damaged or truncated image ({str(exc).splitlines()[0]}); re-export it") from None
    return image


def _too_large(what: str, limit: int) -> str:
    side = int(limit**0.5)
    return (
        f"{what}, over the {limit:,}-pixel limit (possible decompression bomb); "
        f"resize it to at most {limit:,} pixels (e.g. {side}x{side})"
    )


def fit_size(width: int, height: int, max_pixels: int, multiple: int = 8) -> tuple[int, int]:
    """The largest ``(w, h)`` of ``width:height``'s aspect with ``w*h <= max_pixels``, sides multiples of ``multiple``.

    A size already within ``max_pixels`` only loses its remainder modulo ``multiple``; never
    smaller than one ``multiple`` a side.
    """
    scale = min(1.0, (max_pixels / (width * height)) ** 0.5)
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


def edit_size(
    width: int, height: int, size: tuple[int | None, int | None], native: int
) -> tuple[tuple[int, int], bool]:
    """The size an image edit runs at, and whether that scales the photo down.

    ``size`` (--size) when given; else the photo's own, scaled down to the model's ``native``
    pixel count when larger (cost grows with the pixels: a 4096x4096 photo on SD 1.x needed
    over 5 GB and minutes a step), keeping its aspect. Sides are multiples of 8 (latents are
    1/8 of the pixels).
    """
    if size[0] and size[1]:
        return (size[0], size[1]), False
    target = fit_size(width, height, native)
    return target, target[0] * target[1] < (width - width % 8) * (height - height % 8)


def fit_edit_images(photo: Image.Image, mask: Image.Image | None, target: tuple[int, int]) -> tuple:
    """Photo and mask at ``target``: the remainder modulo 8 cropped when that is the size, else resized.

    The mask is resized with its photo, nearest-neighbour so it stays black and white.
    """
    from PIL import Image

    def fit(img: Image.Image, resample: Image.Resampling) -> Image.Image:
        cropped = (img.width - img.width % 8, img.height - img.height % 8)
        if target == cropped:
            return img if cropped == img.size else img.crop((0, 0, *cropped))
        return img.resize(target, resample)

    return fit(photo, Image.Resampling.LANCZOS), fit(mask, Image.Resampling.NEAREST) if mask is not None else None


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert, flattening transparency onto white (black would hide dark content)."""
    from PIL import Image

    if mode == "RGB" and ("A" in image.getbands() or image.mode == "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert(mode)


def iter_images(
    paths: Sequence[str | Path], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Iterator[tuple[Path, Image.Image | None, ImageLoadError | None]]:
    """Yield ``(path, image, None)`` for good files and ``(path, None, error)`` for bad ones, in order."""
    for p in paths:
        path = Path(p)
        try:
            yield path, load_image(path, max_pixels=max_pixels), None
        except ImageLoadError as exc:
            _logger.debug("skipping %s", exc)  # callers report it to the user
            yield path, None, exc
