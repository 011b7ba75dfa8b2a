"""Errors that several safegen_train modules raise, in a module below all of them.

Why a module of its own: the data readers (:mod:`safegen_train.data`) and the pre-processed
image cache (:mod:`safegen_train.pixel_cache`) both raise :class:`DataError`, and the readers
use the cache's normalisation; with the class in either of them the two imported each other.
"""

from __future__ import annotations

from safegen.core.errors import SafegenError


class DataError(SafegenError):
    """Training data cannot be used as it is (bad records, missing files, empty split)."""
