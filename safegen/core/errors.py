"""Errors that safegen reports to users as one line: what failed and what to do."""

from __future__ import annotations


class SafegenError(Exception):
    """A known failure with a one-line, actionable message (the CLI prints it without a traceback)."""


class MissingWeightsError(SafegenError, OSError):
    """Weights for a hub id are neither in the local cache nor downloadable.

    Also an ``OSError``: diffusers and transformers raise ``OSError`` for a missing repo, so
    code written against them (``except OSError``) keeps working with safegen's loaders.
    """

    def __init__(self, repo_id: str, detail: str | None = None):
        self.repo_id = repo_id
        msg = (
            f"weights for '{repo_id}' are not in the local Hugging Face cache and the hub is unreachable; "
            f"fetch them on a connected machine with `hf download {repo_id}` (or set HF_HOME to a cache that has them)"
        )
        if detail:
            msg += f" [{detail}]"
        super().__init__(msg)


class UsageError(SafegenError):
    """The user's choices do not make a runnable request (the CLI exits 2, like a bad flag)."""


class EncoderMismatchError(SafegenError):
    """A safe encoder does not fit the model it is being injected into."""


class PromptFileError(SafegenError):
    """A prompt file cannot be read at all (as opposed to one bad row)."""
