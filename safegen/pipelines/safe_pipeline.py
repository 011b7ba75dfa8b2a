"""The one mechanism behind every safe pipeline: a diffusers class plus Safe-CLIP text encoders.

:func:`safe_pipeline_class` turns any diffusers pipeline class with ``text_encoder*``
components into its safe subclass (``StableDiffusionImg2ImgPipeline`` ->
``SafeStableDiffusionImg2ImgPipeline``); the named classes in the family modules
(text_to_image, image_to_image, inpainting, controlnet) are the same thing written out,
with docstrings. The subclass changes only what it must:

- ``from_pretrained`` / ``from_pipe`` take ``safe_encoder`` (and ``safe_encoder_2``, ``_3``
  for the second and third text encoders) and inject it; every diffusers argument passes
  through, and diffusers' exceptions reach the caller with their own types. The only
  translation: an ``OSError`` for a hub id the offline cache lacks becomes
  :class:`~safegen.core.errors.MissingWeightsError` (itself an ``OSError``).
- ``from_pipe`` keeps every shared component's dtype and device (diffusers casts to fp32
  unless told otherwise) and copies the encoders it replaces, so the source pipeline stays
  the original and stays runnable.
- ``__call__`` has diffusers' exact signature and docstring; the output is diffusers'
  output class plus ``safe_encoder_id`` (``to_tuple()`` and ``return_dict=False`` are
  diffusers' own shapes).
- ``save_pretrained`` writes a plain diffusers folder (``model_index.json`` names the
  diffusers class) plus ``safegen.json``, and only then pushes it when ``push_to_hub=True``.
- Text-encoder slots that no Safe-CLIP covers (SDXL's OpenCLIP bigG, SD3's CLIP-G and T5,
  FLUX's T5) are listed in ``uncovered_text_encoders`` and named once on stderr.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import functools
import inspect
import json
import logging
import re
from pathlib import Path
from typing import Any

import huggingface_hub
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from safegen.core.errors import SafegenError
from safegen.core.fingerprint import fingerprint_folder
from safegen.core.hub import looks_like_hub_id, missing_hub_weights
from safegen.core.io import atomic_write_json, atomic_write_text
from safegen.models.encoders import inject_text_encoder, source_id, text_encoder_slots

_logger = logging.getLogger(__name__)

SAFEGEN_CONFIG = "safegen.json"
_TEXT_ENCODER_SLOT = re.compile(r"text_encoder(_\d+)?")
# diffusers' save_pretrained arguments that only matter for the upload.
_HUB_ARGS = ("repo_id", "commit_message", "private", "create_pr", "token")

_SAFE_CLASSES: dict[type, type] = {}  # diffusers pipeline class -> its safe subclass
_SAFE_OUTPUTS: dict[type, type] = {}  # diffusers output class -> the same plus safe_encoder_id
_WARNED: set[tuple[str, tuple[str, ...]]] = set()
# Set while our from_pipe runs without a dtype: diffusers' closing `.to(dtype=fp32)` is skipped.
_KEEP_DTYPES = contextvars.ContextVar("safegen_keep_dtypes", default=False)


# ----------------------------------------------------------------------------- outputs


def _to_tuple_without_id(self: BaseOutput) -> tuple[Any, ...]:
    """diffusers' tuple form (non-None fields in order), without safegen's extra field."""
    return tuple(value for key, value in self.items() if key != "safe_encoder_id")


def register_safe_output(output_cls: type) -> type:
    """Decorator for a named safe output class: register it for its diffusers parent."""
    parent = output_cls.__mro__[1]
    output_cls.to_tuple = _to_tuple_without_id
    _SAFE_OUTPUTS[parent] = output_cls
    return output_cls


def safe_output_class(output_cls: type) -> type:
    """``output_cls`` plus a ``safe_encoder_id`` field (built once per class)."""
    if output_cls not in _SAFE_OUTPUTS:
        namespace = {
            "__module__": __name__,
            "__annotations__": {"safe_encoder_id": "str | None"},
            "safe_encoder_id": None,
            "__doc__": f"{output_cls.__name__} plus ``safe_encoder_id`` (the Safe-CLIP used; None: original).",
        }
        new = dataclasses.dataclass(type(f"Safe{output_cls.__name__}", (output_cls,), namespace))
        register_safe_output(new)
    return _SAFE_OUTPUTS[output_cls]


def _with_safe_encoder_id(out: Any, safe_id: str | None) -> Any:
    if not isinstance(out, BaseOutput) or not dataclasses.is_dataclass(out):
        return out  # return_dict=False: diffusers' own tuple, untouched
    values = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return safe_output_class(type(out))(**values, safe_encoder_id=safe_id)


# ----------------------------------------------------------------------------- the mixin


def _diffusers_parent(cls: type) -> type:
    for base in cls.__mro__[1:]:
        if issubclass(base, DiffusionPipeline) and not issubclass(base, SafePipelineMixin):
            return base
    raise TypeError(f"{cls.__name__} must also subclass a diffusers pipeline")


def text_encoder_component_names(pipeline_cls: type) -> list[str]:
    """The ``text_encoder*`` components a diffusers pipeline class takes, in order."""
    names = [n for n in inspect.signature(pipeline_cls.__init__).parameters if _TEXT_ENCODER_SLOT.fullmatch(n)]
    return sorted(names, key=lambda n: (len(n), n))


def _encoder_arg(slot: str) -> str:
    """text_encoder -> safe_encoder, text_encoder_2 -> safe_encoder_2."""
    return "safe_encoder" + slot[len("text_encoder") :]


def _wrap_call(parent_call: Any, qualname: str) -> Any:
    @functools.wraps(parent_call)  # sets __wrapped__: inspect.signature and help() show diffusers' own
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _with_safe_encoder_id(parent_call(self, *args, **kwargs), self.safe_encoder_id)

    __call__.__qualname__ = qualname
    return __call__


class SafePipelineMixin:
    """Behaviour shared by every safe pipeline; combine with a diffusers pipeline class (mixin first)."""

    _diffusers_class: type = DiffusionPipeline
    # Keyword -> text-encoder slot that keyword's encoder replaces.
    _encoder_args: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        parent = _diffusers_parent(cls)
        cls._diffusers_class = parent
        cls._encoder_args = {_encoder_arg(slot): slot for slot in text_encoder_component_names(parent)}
        if "__call__" not in cls.__dict__:
            cls.__call__ = _wrap_call(parent.__call__, f"{cls.__name__}.__call__")
        _SAFE_CLASSES.setdefault(parent, cls)

    # ------------------------------------------------------------------ which encoders are safe
    @property
    def safe_encoder_id(self) -> str | None:
        """The safe encoder of the first covered slot (None: the original model)."""
        ids = getattr(self, "_safe_encoder_ids", {})
        return ids.get("text_encoder") or next(iter(ids.values()), None)

    @property
    def safe_encoder_ids(self) -> dict[str, str]:
        """Which safe encoder replaced which text-encoder slot."""
        return dict(getattr(self, "_safe_encoder_ids", {}))

    @property
    def uncovered_text_encoders(self) -> list[str]:
        """Text-encoder slots present in this pipeline that still hold original (unsafe) weights."""
        covered = self.safe_encoder_ids
        return [s for s in self._encoder_args.values() if getattr(self, s, None) is not None and s not in covered]

    def _apply_safe_encoders(self, encoders: dict[str, Any], load_kwargs: dict | None) -> None:
        ids = dict(getattr(self, "_safe_encoder_ids", {}))
        clip_slots = text_encoder_slots(self)
        for arg, slot in self._encoder_args.items():
            enc = encoders.get(arg)
            if enc is None:
                continue
            module = getattr(self, slot, None)
            if module is not None and slot not in clip_slots:
                raise SafegenError(
                    f"{self._diffusers_class.__name__}.{slot} is a {type(module).__name__}, not a CLIP text encoder: "
                    f"no Safe-CLIP covers it; drop {arg}= (covered slots: {', '.join(clip_slots) or 'none'})"
                )
            inject_text_encoder(self, enc, slot=slot, **(load_kwargs or {}))
            ids[slot] = source_id(enc)
        # Plain attribute: not a diffusers component, never written to model_index.json.
        object.__setattr__(self, "_safe_encoder_ids", ids)
        self._warn_uncovered()

    def _warn_uncovered(self) -> None:
        """Name, once per process, the encoders a safe pipeline leaves original."""
        uncovered = self.uncovered_text_encoders
        if not self.safe_encoder_ids or not uncovered:
            return
        key = (self._diffusers_class.__name__, tuple(uncovered))
        if key in _WARNED:
            return
        _WARNED.add(key)
        parts = [f"{slot} ({type(getattr(self, slot)).__name__})" for slot in uncovered]
        _logger.warning(
            "%s: no Safe-CLIP covers %s; prompts still reach the model through %s unchanged",
            type(self).__name__,
            ", ".join(parts),
            "it" if len(parts) == 1 else "them",
        )

    @classmethod
    def _pop_encoders(cls, safe_encoder: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        encoders = {arg: kwargs.pop(arg, None) for arg in cls._encoder_args if arg != "safe_encoder"}
        encoders["safe_encoder"] = safe_encoder
        unknown = [k for k in kwargs if k.startswith("safe_encoder_") and k != "safe_encoder_kwargs"]
        if unknown:
            raise TypeError(
                f"{cls.__name__} has no {unknown[0]}: its text encoders take {', '.join(cls._encoder_args)}"
            )
        return encoders

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        safe_encoder: Any = None,
        safe_encoder_kwargs: dict | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load a diffusers pipeline and swap in a Safe-CLIP text encoder.

        Args:
            pretrained_model_name_or_path: hub id or folder of the base pipeline.
            safe_encoder: hub id, folder, open_clip checkpoint, LoRA adapter folder or loaded
                module (see :mod:`safegen.models.encoders`); None keeps the original encoder.
                ``safe_encoder_2`` / ``safe_encoder_3`` do the same for later text encoders.
            safe_encoder_kwargs: passed to the encoder loader (e.g. ``base`` for a LoRA).
            **kwargs: every diffusers ``from_pretrained`` argument (dtype, variant, ...).

        Raises:
            Whatever diffusers raises (``ValueError`` for a wrong ``variant``, ``OSError`` for a
            missing file), except that a hub id absent from the offline cache raises
            :class:`~safegen.core.errors.MissingWeightsError` (an ``OSError`` too).
        """
        encoders = cls._pop_encoders(safe_encoder, kwargs)
        try:
            pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError as exc:
            missing = missing_hub_weights(str(pretrained_model_name_or_path), exc, kwargs.get("cache_dir"))
            if missing is None:
                raise
            raise missing from exc
        saved = _saved_safegen_config(str(pretrained_model_name_or_path))
        if saved:
            # Weights are already baked in; the ids are claimed only for slots whose files are
            # still the ones saved (a folder edited after saving is refused, never trusted).
            object.__setattr__(
                pipe, "_safe_encoder_ids", _verified_saved_ids(str(pretrained_model_name_or_path), saved)
            )
        pipe._apply_safe_encoders(encoders, safe_encoder_kwargs)
        return pipe

    @classmethod
    def from_pipe(
        cls, pipeline: Any, *, safe_encoder: Any = None, safe_encoder_kwargs: dict | None = None, **kwargs: Any
    ) -> Any:
        """Build a safe pipeline sharing ``pipeline``'s components (UNet, VAE, scheduler, ...).

        The text encoders that receive a safe encoder are copied first, so ``pipeline`` itself
        stays the original: both run side by side with one copy of everything else. Without a
        ``dtype`` argument every shared component keeps its dtype and device (diffusers itself
        would cast them all to fp32, which breaks a half-precision source pipeline).
        """
        encoders = cls._pop_encoders(safe_encoder, kwargs)
        for arg, slot in cls._encoder_args.items():
            if encoders.get(arg) is not None and slot not in kwargs and getattr(pipeline, slot, None) is not None:
                kwargs[slot] = copy.deepcopy(getattr(pipeline, slot))
        keep = "dtype" not in kwargs and "torch_dtype" not in kwargs
        token = _KEEP_DTYPES.set(keep)
        try:
            new = super().from_pipe(pipeline, **kwargs)
        finally:
            _KEEP_DTYPES.reset(token)
        object.__setattr__(new, "_safe_encoder_ids", dict(getattr(pipeline, "_safe_encoder_ids", {})))
        if hasattr(pipeline, "_progress_bar_config"):  # a quiet source pipeline gives a quiet twin
            new.set_progress_bar_config(**pipeline._progress_bar_config)
        new._apply_safe_encoders(encoders, safe_encoder_kwargs)
        return new

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """diffusers' ``to``; skipped only for from_pipe's own dtype cast when no dtype was asked for."""
        if _KEEP_DTYPES.get() and not args and set(kwargs) == {"dtype"}:
            return self
        return super().to(*args, **kwargs)

    # ------------------------------------------------------------------ saving
    def save_pretrained(
        self, save_directory: str | Path, *args: Any, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """Save as a plain diffusers pipeline folder (readable without safegen) plus safegen.json.

        With ``push_to_hub=True`` the folder is uploaded after it is complete, so the hub copy
        loads in plain diffusers too; ``repo_id``, ``token``, ``private``, ``create_pr`` and
        ``commit_message`` mean what they mean in diffusers.
        """
        hub = {k: kwargs.pop(k) for k in _HUB_ARGS if k in kwargs}
        super().save_pretrained(save_directory, *args, push_to_hub=False, **kwargs)
        folder = Path(save_directory)
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = self._diffusers_class.__name__
        atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True) + "\n")
        meta = {
            "safe_encoder_ids": self.safe_encoder_ids,
            "safegen_class": type(self).__name__,
            # What the safe slots' files were, so a load can tell an edited folder from this one.
            "slot_fingerprints": {
                slot: fingerprint_folder(folder / slot) for slot in self.safe_encoder_ids if (folder / slot).is_dir()
            },
        }
        atomic_write_json(folder / SAFEGEN_CONFIG, meta)
        if push_to_hub:
            self._push_folder(folder, **hub)

    def _push_folder(self, folder: Path, *, repo_id: str | None = None, private: bool | None = None, **hub: Any):
        token = hub.get("token")
        repo = huggingface_hub.create_repo(repo_id or folder.name, exist_ok=True, private=private, token=token)
        repo_id = repo.repo_id
        message = hub.get("commit_message") or f"Upload {self._diffusers_class.__name__} (safegen)"
        return self._upload_folder(
            str(folder), repo_id, token=token, commit_message=message, create_pr=hub.get("create_pr", False)
        )


def _saved_safegen_config(source: str) -> dict[str, Any] | None:
    """safegen.json of a saved safe pipeline (local folder, or a cached hub repo), else None.

    The folder it was found in is returned under ``"_folder"``.
    """
    path = Path(source).expanduser() / SAFEGEN_CONFIG
    if not path.is_file() and looks_like_hub_id(source):
        with contextlib.suppress(Exception):  # absent from the cache is the common case, not an error
            hit = huggingface_hub.try_to_load_from_cache(source, SAFEGEN_CONFIG)
            path = Path(hit) if isinstance(hit, str) else path
    if not path.is_file():
        return None
    return {**json.loads(path.read_text()), "_folder": str(path.parent)}


def _verified_saved_ids(source: str, saved: dict[str, Any]) -> dict[str, str]:
    """The safe-encoder ids of a saved pipeline, each checked against the fingerprint saved with it."""
    folder, recorded = Path(saved["_folder"]), saved.get("slot_fingerprints") or {}
    ids = dict(saved.get("safe_encoder_ids", {}))
    for slot, encoder_id in ids.items():
        want = recorded.get(slot)
        have = fingerprint_folder(folder / slot) if (folder / slot).is_dir() else None
        if want is None or have != want:
            why = "records no fingerprint for it" if want is None else "its files changed since it was saved"
            raise SafegenError(
                f"'{source}': {SAFEGEN_CONFIG} says {slot} holds the safe encoder '{encoder_id}', but {why}; "
                f"re-save the pipeline with safegen, or delete {SAFEGEN_CONFIG} to load it as a plain pipeline"
            )
    return ids


# ----------------------------------------------------------------------------- factories


def safe_pipeline_class(pipeline_cls: type) -> type:
    """The safe subclass of a diffusers pipeline class (created on first use, then reused).

    Any pipeline with ``text_encoder*`` components qualifies: CLIP slots take a Safe-CLIP,
    others (T5) are reported as uncovered. A class that is already safe is returned as is.
    """
    if isinstance(pipeline_cls, type) and issubclass(pipeline_cls, SafePipelineMixin):
        return pipeline_cls
    if not (isinstance(pipeline_cls, type) and issubclass(pipeline_cls, DiffusionPipeline)):
        raise SafegenError(f"{pipeline_cls!r} is not a diffusers pipeline class")
    if pipeline_cls not in _SAFE_CLASSES:
        if not text_encoder_component_names(pipeline_cls):
            raise SafegenError(
                f"{pipeline_cls.__name__} has no text encoder, so there is nothing for a Safe-CLIP to replace"
            )
        doc = f"{pipeline_cls.__name__} with Safe-CLIP text encoders (built by safegen.safe_pipeline_class)."
        type(
            f"Safe{pipeline_cls.__name__}", (SafePipelineMixin, pipeline_cls), {"__module__": __name__, "__doc__": doc}
        )
    return _SAFE_CLASSES[pipeline_cls]
