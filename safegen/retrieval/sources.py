"""Open a :class:`~safegen.retrieval.retriever.SafeRetriever` from any safe-encoder source.

``SafeRetriever.from_pretrained`` reads transformers ``CLIPModel`` folders and hub ids.
Everything else a safe encoder can be (a ``safegen-train export --what text|vision``
folder, an open_clip checkpoint, a LoRA adapter) goes through
:func:`safegen.models.encoders.load_safe_clip_model` first, so retrieval and its evaluation accept
the same sources as generation and captioning, or refuse them in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safegen.core.errors import SafegenError
from safegen.core.hub import load_or_explain


def is_plain_clip(source: Any) -> bool:
    """True for a transformers CLIPModel folder or hub id (what ``SafeRetriever.from_pretrained`` reads itself)."""
    from safegen.models.encoders import source_towers

    if not isinstance(source, (str, Path)):
        return False
    path = Path(str(source)).expanduser()
    if path.is_file() or (path.is_dir() and not (path / "config.json").is_file()):
        return False
    return source_towers(str(source)) == ("text", "vision")


def open_retriever(
    source: Any,
    *,
    original: str | None = None,
    processor: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
    torch_dtype: Any = None,
    **kwargs: Any,
) -> Any:
    """A SafeRetriever for ``source``; a one-tower source is completed with ``original`` (the CLIP it came from).

    ``processor`` names the CLIPProcessor source when ``source`` has none (open_clip
    checkpoints, tower exports: the original CLIP's processor is used when given).
    ``kwargs`` go to ``SafeRetriever.from_pretrained`` (device, index, batch_size).
    """
    from safegen.models.encoders import load_safe_clip_model
    from safegen.retrieval.retriever import SafeRetriever

    if not encoder_kwargs and is_plain_clip(source):
        return SafeRetriever.from_pretrained(source, processor=processor, torch_dtype=torch_dtype, **kwargs)
    model = load_safe_clip_model(source, original=original, **(encoder_kwargs or {}))
    if torch_dtype is not None:
        model = model.to(dtype=torch_dtype)
    proc_source = processor or original or _processor_beside(source)
    if proc_source is None:
        raise SafegenError(
            f"'{source}' ships no CLIPProcessor; pass the processor of the CLIP it was fine-tuned from "
            "(--processor openai/clip-vit-large-patch14 for ViT-L/14)"
        )
    from transformers import CLIPProcessor

    proc = load_or_explain(
        str(proc_source), lambda: CLIPProcessor.from_pretrained(str(proc_source), trust_remote_code=False)
    )
    return SafeRetriever.from_pretrained(model, processor=proc, **kwargs)


def _processor_beside(source: Any) -> str | None:
    path = Path(str(source)).expanduser()
    folder = path if path.is_dir() else path.parent
    has = (folder / "preprocessor_config.json").is_file() and any(
        (folder / n).is_file() for n in ("tokenizer.json", "vocab.json")
    )
    return str(folder) if has else None
