"""Resolving model sources: local folder, hub id in the cache, or a clear error offline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import MissingWeightsError, SafegenError

_logger = logging.getLogger(__name__)

T = TypeVar("T")


def looks_like_hub_id(source: str) -> bool:
    """True for 'owner/name' strings that are not an existing local path."""
    if Path(source).expanduser().exists():
        return False
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def is_cached(repo_id: str, filename: str = "config.json", cache_dir: str | None = None) -> bool:
    """Whether a hub repo has `filename` in the local cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a hard dependency of transformers
        return False
    for name in (filename, "model_index.json"):
        hit = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(hit, str):
            return True
    return False


def load_or_explain(source: str, loader: Callable[[], T]) -> T:
    """Run `loader`; turn "not found / offline" failures for a hub id into one clear sentence."""
    try:
        return loader()
    except SafegenError:
        raise  # already explained (MissingWeightsError is also an OSError)
    except (OSError, ValueError) as exc:  # transformers/diffusers raise OSError (or ValueError) for missing repos
        local = Path(source).expanduser()
        if local.exists():
            raise SafegenError(f"cannot load '{source}': {str(exc).splitlines()[0]}") from exc
        if looks_like_hub_id(source):
            raise MissingWeightsError(source, detail=type(exc).__name__) from exc
        raise SafegenError(f"'{source}' is neither a local folder nor a hub id (owner/name)") from exc


def missing_hub_weights(source: str, exc: BaseException, cache_dir: str | None = None) -> MissingWeightsError | None:
    """A :class:`MissingWeightsError` when ``exc`` is an ``OSError`` for a hub id the local cache lacks.

    Drop-in loaders use this instead of :func:`load_or_explain`: every other failure (a
    wrong ``variant`` is a ``ValueError``, a cached repo missing one file an ``OSError``)
    must reach the caller as the type diffusers raised, so the caller's fallbacks work.
    """
    if not isinstance(exc, OSError) or isinstance(exc, SafegenError):
        return None
    if looks_like_hub_id(source) and not is_cached(source, cache_dir=cache_dir):
        return MissingWeightsError(source, detail=type(exc).__name__)
    return None
