"""File IO, one home for it: atomic files and folders, the umask, line splitting, JSONL, PNGs
with their generation parameters, safe names.

A killed process never leaves a half-written file: everything is written to a temporary
file (or folder) beside the target and renamed into place. File names derived from prompt
ids are sanitised and checked to stay inside the output folder. Text files are split into
lines by :func:`split_lines` everywhere, so a U+2028 inside a prompt never splits a row.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safegen.core.errors import UsageError

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 80


def current_umask() -> int:
    """The process umask, read from /proc where possible.

    Setting the umask to read it (the only portable way) briefly changes it for every
    thread of the process; /proc avoids that race on Linux.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    # mkstemp creates 0600 files; a plain open() would give 0666 & ~umask, which users expect.
    return 0o666 & ~current_umask()


def apply_umask(path: str | Path, *, directory: bool = False) -> None:
    """Give a file (0666) or folder (0777) made by ``tempfile`` (0600 / 0700) the permissions a plain
    ``open`` / ``mkdir`` would have under the user's umask; for a folder, everything inside it too
    (some writers, transformers' ``save_pretrained`` among them, also go through private temp files)."""
    mask = current_umask()
    path = Path(path)
    os.chmod(path, (0o777 if directory else 0o666) & ~mask)
    if directory:
        for sub in path.rglob("*"):
            if not sub.is_symlink():
                os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mask)


def _temp_for(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    The file gets the mode a plain ``open()`` would give (0666 minus the umask). With
    ``overwrite=False`` an existing ``path`` is never replaced (:class:`FileExistsError`),
    even when another process creates it at the same moment (hard link, not rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_for(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), _file_mode())
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: no check-then-write race
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_new_file(folder: str | Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/stem+suffix``, or ``stem-2``, ``stem-3``... if taken: never overwrites."""
    folder = Path(folder)
    for i in range(1, 10_000):
        name = f"{stem}{suffix}" if i == 1 else f"{stem}-{i}{suffix}"
        try:
            return atomic_write_bytes(folder / name, data, overwrite=False)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free file name for {stem}{suffix} in {folder}")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line (a metrics or log record); a line is written by a single write call."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final`` in one rename.

    An existing ``final`` is moved aside first and deleted after the rename, so at every
    instant either the old or the new complete folder exists under its name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    apply_umask(tmp, directory=True)
    old = None
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"'{final}' already exists")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def split_lines(text: str) -> list[str]:
    """Lines split on \\n and \\r\\n only.

    ``str.splitlines`` also splits on U+2028, U+0085, form feeds and other separators that
    are valid inside a prompt or a JSON string: one row would become two.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def text_rows(text: str) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of a one-item-a-line text file: prompts, captions, texts.

    The one rule every such file follows: blank lines and ``#`` comments are skipped, and
    lines end at \\n or \\r\\n only (:func:`split_lines`).
    """
    for line_no, raw in enumerate(split_lines(text), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line_no, line


def jsonl_rows(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every non-blank line of a JSONL text, split by :func:`split_lines`."""
    for line_no, line in enumerate(split_lines(text), start=1):
        if line.strip():
            yield line_no, line


def clip_text(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters for messages (a 10 MB prompt is never echoed whole)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def format_parameters(params: dict[str, Any]) -> str:
    """The A1111-style ``parameters`` text: prompt, negative prompt, then `Key: value` pairs."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    names = {
        "steps": "Steps",
        "guidance": "CFG scale",
        "seed": "Seed",
        "size": "Size",
        "model": "Model",
        "safe_encoder": "Safe encoder",
        "scheduler": "Sampler",
        "strength": "Denoising strength",
    }
    pairs = [f"{label}: {params[key]}" for key, label in names.items() if params.get(key) not in (None, "")]
    if "safe_encoder" in params and params["safe_encoder"] is None:
        pairs.append("Safe encoder: none")
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def png_bytes(image: Any, params: dict[str, Any] | None = None) -> bytes:
    """Encode a PIL image as PNG with a ``parameters`` text chunk and a ``safegen`` JSON chunk."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if params:
        info.add_text("parameters", format_parameters(params))
        info.add_text("safegen", json.dumps(params, sort_keys=True, default=str))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(image: Any, path: str | Path, params: dict[str, Any] | None = None) -> Path:
    """Save a PNG atomically with its generation parameters embedded."""
    return atomic_write_bytes(path, png_bytes(image, params))


def read_png_parameters(path: str | Path) -> dict[str, Any]:
    """The ``safegen`` JSON chunk of a PNG written by :func:`save_png` (empty if none)."""
    from PIL import Image

    with Image.open(path) as im:
        raw = im.text.get("safegen") if hasattr(im, "text") else None
    return json.loads(raw) if raw else {}


def sanitize_stem(text: str, fallback: str = "item") -> str:
    """A file-name stem from any id or prompt: [A-Za-z0-9._-] only, no leading dots, bounded length."""
    stem = _UNSAFE_CHARS.sub("_", str(text)).strip("._-")
    stem = stem[:MAX_STEM].rstrip("._-")
    return stem or fallback


def path_inside(root: str | Path, name: str) -> Path:
    """``root / name``, refusing any name that would resolve outside ``root``."""
    root = Path(root).resolve()
    candidate = (root / name).resolve()
    if candidate != root and root not in candidate.parents:
        raise ValueError(f"refusing to write '{name}': it resolves outside the output folder {root}")
    return candidate


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """An output folder path that is not a file (checked before any work, so nothing is lost at the end)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {clip_text(str(path), 200)} is a file; pass a folder (it is created if missing)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {clip_text(str(path), 200)}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{flag} {clip_text(str(path), 200)}: cannot write in {parent}")
            break
    return path
