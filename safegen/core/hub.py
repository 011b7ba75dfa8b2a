"""Resolving model sources: local folder, hub id in the cache, or a clear error offline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from safegen.core.errors import MissingWeightsError, SafegenError

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
    """Run `loader`; turn "not found / offline" and damaged-weights failures into one clear sentence.

    Damaged weights (a truncated, empty or garbage safetensors file, a pickle that is not
    plain tensors, tensors of the wrong shape) raise errors of several libraries' own types;
    each becomes a :class:`SafegenError` naming the source, with the original chained for
    ``SAFEGEN_DEBUG=1``.
    """
    import pickle

    try:
        return loader()
    except SafegenError:
        raise  # already explained (MissingWeightsError is also an OSError)
    except (OSError, ValueError) as exc:  # transformers/diffusers raise OSError (or ValueError) for missing repos
        local = Path(source).expanduser()
        if local.exists():
            raise SafegenError(f"cannot load '{source}': {_first_line(exc)}") from exc
        if looks_like_hub_id(source):
            raise MissingWeightsError(source, detail=type(exc).__name__) from exc
        raise SafegenError(f"'{source}' is neither a local folder nor a hub id (owner/name)") from exc
    except pickle.UnpicklingError as exc:
        raise SafegenError(
            f"cannot load '{source}': a pickled (.bin/.pt) weights file in it holds more than plain tensors, "
            "and safegen never runs code from pickles; convert it to .safetensors on a trusted machine"
        ) from exc
    except (RuntimeError, EOFError, KeyError) as exc:
        raise SafegenError(
            f"cannot load '{source}': damaged or mismatched weights ({type(exc).__name__}: {_first_line(exc)}); "
            "re-export or re-download them"
        ) from exc
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # safetensors' own error type (a Rust extension)
            raise
        raise SafegenError(
            f"cannot load '{source}': a .safetensors file in it is damaged ({_first_line(exc)}); "
            "re-export or re-download it"
        ) from exc


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


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
