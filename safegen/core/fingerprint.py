"""Content fingerprints of model weights, so results can be bound to the weights that made them.

Why: a run folder that says "safe encoder: runs/safe_clip" is not evidence of anything once
the encoder is re-trained into the same folder. Resume, eval and retrieval indexes key their
results by a fingerprint of the weights' bytes instead, so new weights mean new results.

What a fingerprint is: the SHA-256 of a file's bytes; for a folder (a diffusers or
transformers checkpoint, a LoRA adapter), the SHA-256 over the sorted ``(relative path,
file fingerprint)`` pairs of every regular file in it (hidden files, lock files and
``__pycache__`` left out; directory symlinks not followed, so a loop cannot hang it).

Why it stays cheap:

- Each file's hash is cached by (real path, size, mtime) in a small JSON file under
  ``$SAFEGEN_CACHE`` (default ``~/.cache/safegen``); unchanged weights are never read twice.
- Files of the Hugging Face cache are symlinks to ``blobs/<sha256>`` for large (LFS) files:
  that name already is the content hash, so it is used as is.
- Loaded modules that came from nowhere on disk (tests, pipelines built in code) are
  fingerprinted from their tensors (:func:`fingerprint_module`).

>>> fingerprint_source("safegen/assets/toy/safe_clip")   # doctest: +SKIP
'5c1f...'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safegen.core.assets import ASSETS_DIR

_logger = logging.getLogger(__name__)

_CHUNK = 8 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SKIP_NAMES = {"__pycache__"}
_cache_lock = threading.Lock()
_memory: dict[str, str] = {}


def cache_file() -> Path:
    """Where file fingerprints are cached (``$SAFEGEN_CACHE/fingerprints.json``)."""
    root = os.environ.get("SAFEGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "safegen"
    )
    return Path(root) / "fingerprints.json"


def _load_disk_cache() -> dict[str, str]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _store(entries: dict[str, str]) -> None:
    """Merge ``entries`` into the disk cache; a cache that cannot be written is only a lost speed-up."""
    from safegen.core.io import atomic_write_json

    try:
        data = _load_disk_cache()
        data.update(entries)
        if len(data) > 20000:  # keep it small: drop the oldest half (dicts keep insertion order)
            data = dict(list(data.items())[len(data) // 2 :])
        atomic_write_json(cache_file(), data)
    except OSError as exc:
        _logger.debug("fingerprint cache not written: %s", exc)


def _stat_key(real: str, st: os.stat_result) -> str:
    return f"{real}|{st.st_size}|{st.st_mtime_ns}"


def hash_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (no cache)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint_file(path: str | Path, *, use_cache: bool = True) -> str:
    """The SHA-256 of one file's bytes, cached by (real path, size, mtime)."""
    fp, new = _file_fp(Path(path), use_cache, _load_disk_cache() if use_cache else {})
    if new and use_cache:
        _store(new)
    return fp


def _file_fp(path: Path, use_cache: bool, disk: dict[str, str]) -> tuple[str, dict[str, str]]:
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if os.path.basename(os.path.dirname(real)) == "blobs" and _HEX64.match(name):
        return name, {}  # Hugging Face cache: an LFS blob is named by its SHA-256
    st = os.stat(real)
    key = _stat_key(real, st)
    if use_cache:
        with _cache_lock:
            hit = _memory.get(key) or disk.get(key)
        if hit:
            return hit, {}
    fp = hash_file(real)
    with _cache_lock:
        _memory[key] = fp
    return fp, {key: fp}


def _folder_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_NAMES)
        for name in sorted(names):
            if name.startswith(".") or name.endswith((".lock", ".tmp")):
                continue
            p = Path(root) / name
            if p.is_file():  # follows file symlinks (the HF cache), skips dangling ones
                files.append(p)
    return files


def fingerprint_folder(folder: str | Path, *, use_cache: bool = True) -> str:
    """One fingerprint for every regular file under ``folder`` (names and contents)."""
    folder = Path(folder)
    disk = _load_disk_cache() if use_cache else {}
    h = hashlib.sha256(b"safegen-folder-v1\n")
    new: dict[str, str] = {}
    for p in _folder_files(folder):
        fp, fresh = _file_fp(p, use_cache, disk)
        new.update(fresh)
        h.update(f"{p.relative_to(folder).as_posix()}\0{fp}\n".encode())
    if new and use_cache:
        _store(new)
    return h.hexdigest()


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub id, if the Hugging Face cache has one (never downloads)."""
    if "/" not in repo_id or repo_id.count("/") > 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, not a repo id, hub library missing: no content fingerprint
        return None


def fingerprint_source(source: str | Path | None, *, use_cache: bool = True) -> str | None:
    """The content fingerprint of a model source: a file, a folder, a cached hub id or ``@assets/...``.

    None (the original model, no safe encoder) gives None. A hub id that is not in the local
    cache gives ``"id:<source>"``: a name, not a content hash, marked as such.
    """
    if source is None:
        return None
    text = str(source)
    if text.startswith("@assets/"):
        text = str(ASSETS_DIR / text[len("@assets/") :])
    path = Path(text).expanduser()
    try:
        if path.is_file():
            return fingerprint_file(path, use_cache=use_cache)
        if path.is_dir():
            return fingerprint_folder(path, use_cache=use_cache)
    except OSError as exc:
        from safegen.core.errors import SafegenError

        raise SafegenError(f"cannot read {path} to fingerprint it: {exc.strerror or exc}") from None
    snapshot = _hub_snapshot(text)
    if snapshot is not None:
        return fingerprint_folder(snapshot, use_cache=use_cache)
    return f"id:{text}"


def fingerprint_tensors(named: Iterable[tuple[str, Any]]) -> str:
    """SHA-256 over ``(name, dtype, shape, bytes)`` of tensors (moved to the CPU one at a time)."""
    import torch

    h = hashlib.sha256(b"safegen-tensors-v1\n")
    for name, tensor in named:
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw 16-bit words
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def fingerprint_module(module: Any) -> str:
    """The fingerprint of a loaded ``torch.nn.Module``'s parameters and buffers."""
    return fingerprint_tensors(sorted(module.state_dict().items()))


def short(fp: str | None, n: int = 12) -> str:
    """A short form for messages and file names (``none`` for no fingerprint)."""
    if fp is None:
        return "none"
    return fp if fp.startswith("id:") else fp[:n]


def _local_fingerprint(source: Any) -> str | None:
    """A content fingerprint when ``source`` names weights on this machine, else None."""
    if not isinstance(source, str | Path) or not str(source):
        return None
    fp = fingerprint_source(source)
    return None if fp is None or fp.startswith("id:") else fp


def fingerprint_pipeline(pipe: Any, base_source: str | None = None) -> tuple[str | None, str | None]:
    """(base model, safe encoder) fingerprints of a loaded pipeline or captioner.

    Sources on disk (or in the Hugging Face cache) are fingerprinted from their files (cached);
    anything else from the loaded tensors. The safe-encoder fingerprint covers every slot a
    Safe-CLIP encoder was injected into (None for the original model); the base fingerprint
    covers the pipeline's source, or its other modules when it has none on disk.
    """
    import torch

    safe_ids = dict(getattr(pipe, "safe_encoder_ids", None) or {})
    if not safe_ids and getattr(pipe, "safe_encoder_id", None):
        slot = getattr(pipe, "vision_tower_name", None) or "safe_encoder"
        safe_ids = {slot: pipe.safe_encoder_id}
    safe_fp = None
    if safe_ids:
        h = hashlib.sha256(b"safegen-safe-v1\n")
        for slot, sid in sorted(safe_ids.items()):
            fp = _local_fingerprint(sid)
            if fp is None:
                module = _get_path(pipe, slot)
                fp = fingerprint_module(module) if isinstance(module, torch.nn.Module) else f"id:{sid}"
            h.update(f"{slot}\0{fp}\n".encode())
        safe_fp = h.hexdigest()
    name = base_source or getattr(getattr(pipe, "config", None), "_name_or_path", None)
    name = name or getattr(pipe, "model_id", None)
    base_fp = _local_fingerprint(name)
    if base_fp is None:
        components = getattr(pipe, "components", None)
        if not isinstance(components, dict):
            components = {"model": getattr(pipe, "model", pipe)}
        named = []
        for slot, module in sorted(components.items()):
            if slot in safe_ids or not isinstance(module, torch.nn.Module):
                continue
            named += [(f"{slot}.{k}", v) for k, v in sorted(module.state_dict().items())]
        base_fp = fingerprint_tensors(named) if named else f"id:{name or type(pipe).__name__}"
    return base_fp, safe_fp


def _get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
