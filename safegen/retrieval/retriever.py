"""Safe cross-modal retrieval and the paper's retrieval metric.

``recall_at_k`` is the one implementation shared by safegen-train's validation,
``safegen eval retrieval`` and the toy-world benchmarks; ``retrieval_table`` builds the
paper's S-V / S-G / U-V / U-G table on it. ``SafeRetriever`` encodes images and texts with
any transformers CLIP (a Safe-CLIP, or the original for comparison) into a
:class:`RetrievalIndex` that lives on disk and grows incrementally.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safegen.core.errors import SafegenError
from safegen.models.clip_embedder import ClipEmbedder, load_clip, normalise_model_id

if TYPE_CHECKING:
    import torch

_logger = logging.getLogger(__name__)


def recall_at_k(queries: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = (1, 5, 10, 20)) -> dict[int, float]:
    """Recall@K in percent for index-paired queries and gallery (row i matches row i).

    Ranking is by cosine similarity. A query counts as a hit at K when its own gallery
    item is among the K most similar (ties broken against the query: an item scoring
    exactly as high as the match ranks ahead of it, so a collapsed, constant embedding
    scores 0 for every K < N instead of looking perfect).
    """
    import torch

    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape != gallery.shape:
        raise ValueError(
            f"queries and gallery must both be (N, D), got {tuple(queries.shape)} and {tuple(gallery.shape)}"
        )
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    g = torch.nn.functional.normalize(gallery.float(), dim=-1)
    sims = q @ g.T  # (N, N)
    own = sims.diagonal().unsqueeze(1)  # (N, 1)
    # rank = number of gallery items at least as similar as the match, excluding itself
    rank = (sims >= own).sum(dim=1) - 1  # (N,)
    n = queries.shape[0]
    return {int(k): float((rank < k).float().mean().item() * 100.0) if n else 0.0 for k in ks}


# ----------------------------------------------------------------------------- the paper's retrieval table

# (text, image) pairs: S/U = safe/unsafe text, V = real (safe) image, G = generated unsafe image
GALLERIES = ("S-V", "S-G", "U-V", "U-G")
RECALL_SUM_GALLERIES = ("S-V", "S-G", "U-V")  # the released early-stopping "recall-sum" leaves U-G out on purpose


def retrieval_table(
    safe_text: torch.Tensor,
    unsafe_text: torch.Tensor,
    safe_image: torch.Tensor | None = None,
    unsafe_image: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10, 20),
) -> dict[str, dict[str, dict[int, float]]]:
    """Recall@K of the paper's four galleries in both directions, all from :func:`recall_at_k`.

    Inputs are (N, D) embeddings, row i of each being the same ViSU quadruple. Galleries:
    S-V (safe text, safe image), S-G (safe text, generated unsafe image), U-V (unsafe text,
    safe image), U-G (unsafe text, unsafe image). A missing image set drops its galleries.
    Returns ``{gallery: {"t2i": {k: recall %}, "i2t": {...}}}``, the layout safegen_train's
    validation reports.
    """
    texts = {"S": safe_text, "U": unsafe_text}
    images = {"V": safe_image, "G": unsafe_image}
    table: dict[str, dict[str, dict[int, float]]] = {}
    for name in GALLERIES:
        text, image = texts[name[0]], images[name[2]]
        if text is None or image is None:
            continue
        table[name] = {"t2i": recall_at_k(text, image, ks), "i2t": recall_at_k(image, text, ks)}
    return table


def recall_sum(table: dict[str, dict[str, dict[int, float]]], k: int = 1) -> float | None:
    """The released early-stopping score: R@k over S-V, S-G and U-V in both directions (None: no gallery)."""
    parts = [table[g][d][k] for g in RECALL_SUM_GALLERIES if g in table for d in ("t2i", "i2t") if k in table[g][d]]
    return float(sum(parts)) if parts else None


def format_retrieval_table(table: dict[str, dict[str, dict[int, float]]]) -> str:
    """The table as aligned plain text, one row per gallery and direction (for logs and the CLI)."""
    lines = []
    for gallery, directions in table.items():
        for direction, recalls in directions.items():
            cells = "  ".join(f"R@{k} {v:6.2f}" for k, v in recalls.items())
            lines.append(f"{gallery:<4} {direction:<4} {cells}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- persistent index

INDEX_FORMAT = "safegen.retrieval_index"
INDEX_VERSION = 2  # 2: embeddings in append-only part files; 1 (one file) is still read
INDEX_JSON = "index.json"
KINDS = ("image", "text")
MAX_PART_FILES = 32  # more parts than this: the next save compacts them into one file
_PART_NAME = re.compile(r"^embeddings-\d{1,12}\.safetensors$")


@dataclass(frozen=True)
class SearchHit:
    """One search result: its rank (1 = best), cosine score, and the item as indexed."""

    rank: int
    score: float
    id: str
    kind: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": self.score, "id": self.id, "kind": self.kind, "source": self.source}


class RetrievalIndex:
    """Unit-norm embeddings (N, D) plus one metadata record per row, stored on disk as a folder.

    Layout: ``index.json`` (format, model and its weight fingerprint, dim, items, and the
    embeddings part files) and ``embeddings-<generation>.safetensors`` parts. A save writes
    only the rows added since the last save to a new part, then replaces ``index.json``
    atomically (the commit point): a crash at any point leaves the previous, consistent index
    readable, and saving often (after every chunk of a long ``add``) stays cheap. Parts are
    compacted into one file when there are many, or after rows were replaced; files no
    longer named by ``index.json`` are removed after the commit. Image items carry the
    SHA-256 of their file, so a changed file is re-encoded. Search is exact (brute-force
    cosine), see benchmarks/retrieval_latency.py.
    """

    def __init__(self, dim: int | None = None, *, model: str | None = None, model_fingerprint: str | None = None):
        import torch

        self.dim = dim
        self.model = model
        self.model_fingerprint = model_fingerprint
        self._parts: list[dict[str, Any]] = []  # part files on disk: [{"file", "rows"}]
        self._persisted = 0  # rows already in those parts
        self._rewrite = False  # rows were removed: the next save writes one fresh file
        self._folder: Path | None = None
        self._by_key: dict[tuple[str, str], dict[str, str]] | None = None
        self.items: list[dict[str, str]] = []
        self._chunks: list[torch.Tensor] = [torch.zeros(0, dim or 0)]  # (n_i, D) float32, unit norm
        self.generation = 0
        self._keys: set[tuple[str, str]] = set()
        self._kind_masks: dict[str, torch.Tensor] = {}  # kind -> (N,) bool, rebuilt after each add

    def __len__(self) -> int:
        return len(self.items)

    @property
    def embeddings(self) -> torch.Tensor:
        """All rows (N, D); chunks from incremental adds are joined once, on first use."""
        import torch

        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks, dim=0)]
        return self._chunks[0]

    @embeddings.setter
    def embeddings(self, value: torch.Tensor) -> None:
        self._chunks = [value]

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._keys

    def count(self, kind: str) -> int:
        return sum(1 for item in self.items if item["kind"] == kind)

    def add(self, embeddings: torch.Tensor, items: Sequence[dict[str, str]]) -> int:
        """Append rows (normalised here) and their records ({id, kind, source}); returns how many were added.

        Items whose (kind, id) is already indexed are skipped, so re-adding a folder is harmless.
        """
        import torch

        if embeddings.ndim != 2 or embeddings.shape[0] != len(items):
            raise ValueError(f"embeddings must be (N, D) with N = {len(items)} items, got {tuple(embeddings.shape)}")
        if self.dim is None:
            self.dim = int(embeddings.shape[1])
            self.embeddings = torch.zeros(0, self.dim)
        if embeddings.shape[1] != self.dim:
            raise SafegenError(
                f"embeddings are {embeddings.shape[1]}-d but the index holds {self.dim}-d ones "
                f"(built with '{self.model}'); use the same CLIP model or build a new index"
            )
        keep, records = [], []
        for row, item in enumerate(items):
            if item.get("kind") not in KINDS:
                raise ValueError(f"item {row} has kind {item.get('kind')!r}; expected one of {KINDS}")
            key = (item["kind"], str(item["id"]))
            if key in self._keys:
                continue
            self._keys.add(key)
            keep.append(row)
            record = {"id": str(item["id"]), "kind": item["kind"], "source": str(item.get("source", item["id"]))}
            if item.get("sha256"):
                record["sha256"] = str(item["sha256"])
            records.append(record)
        if keep:
            new = torch.nn.functional.normalize(embeddings[keep].detach().float().cpu(), dim=-1)  # (n, D)
            self._chunks.append(new)  # joined lazily: many small adds must not copy the matrix each time
            self.items.extend(records)
            self._kind_masks = {}
        return len(keep)

    def item(self, key: tuple[str, str]) -> dict[str, str] | None:
        """The record of an indexed (kind, id), or None."""
        if key not in self._keys:
            return None
        if self._by_key is None or len(self._by_key) != len(self.items):
            self._by_key = {(it["kind"], it["id"]): it for it in self.items}
        return self._by_key.get(key)

    def remove(self, keys: set[tuple[str, str]]) -> int:
        """Drop the rows of these (kind, id) keys (e.g. files whose content changed); returns how many."""
        import torch

        keep = [i for i, it in enumerate(self.items) if (it["kind"], it["id"]) not in keys]
        removed = len(self.items) - len(keep)
        if removed:
            self.embeddings = self.embeddings[torch.tensor(keep, dtype=torch.long)] if keep else self.embeddings[:0]
            self.items = [self.items[i] for i in keep]
            self._keys -= keys
            self._kind_masks = {}
            self._by_key = None
            self._rewrite = True
        return removed

    def _kind_mask(self, kinds: Sequence[str]) -> torch.Tensor:
        """(N,) bool: rows whose kind is in ``kinds`` (cached, since indexes hold 10^5 rows)."""
        import torch

        key = ",".join(sorted(kinds))
        if key not in self._kind_masks:
            self._kind_masks[key] = torch.tensor([item["kind"] in kinds for item in self.items], dtype=torch.bool)
        return self._kind_masks[key]

    def search(self, query: torch.Tensor, k: int = 10, kinds: Sequence[str] | None = None) -> list[list[SearchHit]]:
        """Top-k items by cosine similarity for each query row (Q, D) or a single (D,) query."""
        import torch

        q = query.detach().float().cpu()
        q = q.unsqueeze(0) if q.ndim == 1 else q  # (Q, D)
        if q.shape[1] != self.dim:
            raise SafegenError(f"query is {q.shape[1]}-d but the index holds {self.dim}-d embeddings")
        q = torch.nn.functional.normalize(q, dim=-1)
        scores = q @ self.embeddings.T  # (Q, N); the gallery is never copied
        available = len(self)
        if kinds is not None:
            mask = self._kind_mask(kinds)  # (N,)
            available = int(mask.sum())
            scores = scores.masked_fill(~mask, float("-inf"))
        if available == 0:
            return [[] for _ in range(q.shape[0])]
        top = torch.topk(scores, k=min(k, available), dim=1)
        results = []
        for qi in range(q.shape[0]):
            hits = []
            for rank, (score, row) in enumerate(zip(top.values[qi].tolist(), top.indices[qi].tolist(), strict=True)):
                item = self.items[row]
                hits.append(SearchHit(rank + 1, float(score), item["id"], item["kind"], item["source"]))
            results.append(hits)
        return results

    # -------------------------------------------------------------- persistence

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder`` crash-safely (new rows to a new part file, then index.json).

        Only rows added since the last save to the same folder are written; a first save, a
        save after rows were removed, or one past :data:`MAX_PART_FILES` parts writes all rows
        to one file. One writer per folder at a time (the CLI holds :mod:`safegen.core.locking`'s
        lock); a save that finds index.json changed by someone else rewrites everything.
        """
        from safetensors.torch import save

        from safegen.core.io import atomic_write_bytes, atomic_write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        previous = _read_index_json(folder) if (folder / INDEX_JSON).exists() else None
        generation = max(self.generation, previous["generation"] if previous else 0) + 1
        incremental = (
            previous is not None
            and self._folder == folder.resolve()
            and previous["generation"] == self.generation
            and not self._rewrite
            and len(self._parts) < MAX_PART_FILES
        )
        emb_name = f"embeddings-{generation:06d}.safetensors"
        if incremental:
            parts = list(self._parts)
            new_rows = self.embeddings[self._persisted :]
            if len(new_rows):
                atomic_write_bytes(folder / emb_name, save({"embeddings": new_rows.contiguous()}))
                parts.append({"file": emb_name, "rows": int(new_rows.shape[0])})
        else:
            atomic_write_bytes(folder / emb_name, save({"embeddings": self.embeddings.contiguous()}))
            parts = [{"file": emb_name, "rows": len(self)}]
        meta = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "generation": generation,
            "embeddings_files": parts,
            "model": self.model,
            "model_fingerprint": self.model_fingerprint,
            "dim": self.dim,
            "count": len(self),
            "items": self.items,
        }
        atomic_write_json(folder / INDEX_JSON, meta)  # the commit point
        self.generation = generation
        self._parts, self._persisted, self._rewrite, self._folder = parts, len(self), False, folder.resolve()
        named = {p["file"] for p in parts}
        for stale in folder.glob("embeddings-*.safetensors"):
            if stale.name not in named:
                stale.unlink(missing_ok=True)
        _logger.info("saved %d items to %s", len(self), folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RetrievalIndex:
        """Read an index folder written by :meth:`save`; a damaged one is refused with the file named.

        A reader racing a writer's compaction (a part named by the index.json it read is
        already gone) reads the new index.json once more.
        """
        try:
            return cls._load_once(Path(folder))
        except _PartMissing:
            return cls._load_once(Path(folder), last_try=True)

    @classmethod
    def _load_once(cls, folder: Path, last_try: bool = False) -> RetrievalIndex:
        import torch
        from safetensors.torch import load_file

        meta = _read_index_json(folder)
        chunks = []
        for part in meta["embeddings_files"]:
            emb_path = folder / part["file"]
            if not emb_path.is_file():
                if not last_try:
                    raise _PartMissing(emb_path.name)
                raise SafegenError(f"index '{folder}' names {emb_path.name}, which is missing; rebuild the index")
            try:
                emb = load_file(str(emb_path))["embeddings"].float()
            except Exception as exc:  # safetensors raises several types for damaged files
                raise SafegenError(
                    f"cannot read {emb_path} ({type(exc).__name__}: {str(exc)[:120]}); rebuild the index"
                ) from None
            if emb.ndim != 2 or emb.shape[0] != part["rows"] or (emb.shape[0] and emb.shape[1] != meta["dim"]):
                raise SafegenError(
                    f"{emb_path} holds {tuple(emb.shape)} embeddings but {folder / INDEX_JSON} describes "
                    f"{part['rows']} x {meta['dim']}; rebuild the index"
                )
            chunks.append(emb)
        emb = torch.cat(chunks) if chunks else torch.zeros(0, meta["dim"] or 0)
        if emb.shape[0] != meta["count"] or len(meta["items"]) != meta["count"]:
            raise SafegenError(
                f"{folder / INDEX_JSON} describes {meta['count']} items but holds {len(meta['items'])} records "
                f"and {emb.shape[0]} embeddings; rebuild the index"
            )
        index = cls(meta["dim"], model=meta.get("model"), model_fingerprint=meta.get("model_fingerprint"))
        index.embeddings = emb
        index.items = [dict(item) for item in meta["items"]]
        index._keys = {(item["kind"], item["id"]) for item in index.items}
        index.generation = int(meta["generation"])
        index._parts, index._persisted, index._folder = list(meta["embeddings_files"]), len(emb), folder.resolve()
        return index


class _PartMissing(Exception):
    """Internal: a part file named by index.json is gone (perhaps compacted by a writer meanwhile)."""


def _read_index_json(folder: Path) -> dict[str, Any]:
    """index.json, checked field by field: a hand-edited or damaged file is one clear error, never a traceback."""
    path = folder / INDEX_JSON
    if not path.exists():
        raise SafegenError(
            f"'{folder}' is not a retrieval index (no {INDEX_JSON}); build one with `safegen retrieve build`"
        )

    def bad(why: str) -> SafegenError:
        return SafegenError(f"{path}: {why}; rebuild the index (`safegen retrieve build --overwrite`)")

    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read it ({exc})") from None
    except (ValueError, RecursionError) as exc:
        raise bad(f"not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise SafegenError(f"{path} is not a safegen retrieval index (format {str(fmt)[:60]!r})")
    version = meta.get("version", 0)
    if not isinstance(version, int):
        raise bad(f"version must be an integer, got {str(version)[:40]!r}")
    if version > INDEX_VERSION:
        raise SafegenError(f"{path} was written by a newer safegen (index version {version}); upgrade safegen")
    if "embeddings_files" not in meta and isinstance(meta.get("embeddings_file"), str):  # version 1
        meta["embeddings_files"] = [{"file": meta["embeddings_file"], "rows": meta.get("count")}]
    missing = [key for key in ("generation", "embeddings_files", "dim", "count", "items") if key not in meta]
    if missing:
        raise bad(f"lacks field(s) {', '.join(missing)}")
    for key in ("generation", "count"):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0:
            raise bad(f"'{key}' must be a non-negative integer")
    if meta["dim"] is not None and (not isinstance(meta["dim"], int) or isinstance(meta["dim"], bool)):
        raise bad("'dim' must be an integer")
    parts = meta["embeddings_files"]
    if not isinstance(parts, list) or not all(
        isinstance(p, dict)
        and isinstance(p.get("file"), str)
        and _PART_NAME.match(p["file"])
        and isinstance(p.get("rows"), int)
        and p["rows"] >= 0
        for p in parts
    ):
        raise bad("'embeddings_files' must list {file: embeddings-N.safetensors, rows: N} entries")
    items = meta["items"]
    if not isinstance(items, list) or not all(
        isinstance(it, dict)
        and it.get("kind") in KINDS
        and isinstance(it.get("id"), str)
        and isinstance(it.get("source"), str)
        for it in items
    ):
        raise bad("'items' must be a list of {id, kind (image|text), source} records")
    for key in ("model", "model_fingerprint"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(f"'{key}' must be text")
    return meta


# ----------------------------------------------------------------------------- the retriever


@dataclass
class AddReport:
    """What an add call did: rows added, items already indexed, and files that could not be read."""

    added: int = 0
    skipped: int = 0
    changed: int = 0  # files already indexed whose bytes changed since: re-encoded, old rows replaced
    errors: list[str] = field(default_factory=list)


class SafeRetriever(ClipEmbedder):
    """Cross-modal search with any transformers CLIP (a Safe-CLIP or the original) over a persistent index.

    Args:
        model: a transformers ``CLIPModel``.
        processor: its ``CLIPProcessor``.
        model_id: the id recorded in the index; adding with another model is refused, since
            embeddings of two models are not comparable.
        index: an existing :class:`RetrievalIndex` (a new, empty one otherwise).
        batch_size: images or texts encoded per forward pass.
        model_fingerprint: content fingerprint of the model's weights (see :mod:`safegen.core.fingerprint`);
            computed from the loaded tensors when not given. An index made by other weights (a
            re-trained encoder saved into the same folder) is refused.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_id: str | None = None,
        index: RetrievalIndex | None = None,
        batch_size: int = 32,
        model_fingerprint: str | None = None,
    ):
        from safegen.core.fingerprint import fingerprint_module

        super().__init__(model, processor, batch_size=batch_size)
        self.model_id = model_id or getattr(getattr(model, "config", None), "_name_or_path", None) or None
        self.model_fingerprint = model_fingerprint or fingerprint_module(model)
        self.index = index if index is not None else RetrievalIndex(model=self.model_id)
        self._check_index_model()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path | Any,
        *,
        processor: Any = None,
        index: str | Path | RetrievalIndex | None = None,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
        batch_size: int = 32,
        **hf_kwargs: Any,
    ) -> SafeRetriever:
        """Load a CLIPModel (hub id, folder or loaded model) with its processor, and optionally an index folder.

        ``processor`` may name another source for the CLIPProcessor, for checkpoints that
        ship weights only (e.g. ``openai/clip-vit-large-patch14`` for a ViT-L/14 Safe-CLIP).
        """
        from transformers import CLIPModel

        model_fp = None
        if isinstance(pretrained_model_name_or_path, CLIPModel):
            model = pretrained_model_name_or_path
            model_id = getattr(model, "safegen_source", None)
            if processor is None:
                raise SafegenError("a loaded CLIPModel needs its processor: pass processor=CLIPProcessor(...)")
        else:
            from safegen.core.fingerprint import fingerprint_source

            source = str(pretrained_model_name_or_path)
            model_id = normalise_model_id(source)
            model_fp = fingerprint_source(source)
            model_fp = None if model_fp is None or model_fp.startswith("id:") else model_fp
            model, processor = load_clip(source, processor=processor, torch_dtype=torch_dtype, **hf_kwargs)
        if device is not None:
            model = model.to(device)
        if isinstance(index, (str, Path)):
            index = RetrievalIndex.load(index)
        return cls(model, processor, model_id=model_id, index=index, batch_size=batch_size, model_fingerprint=model_fp)

    def _check_index_model(self) -> None:
        recorded = self.index.model
        if recorded and self.model_id and recorded != self.model_id:
            raise SafegenError(
                f"the index was built with '{recorded}' but this retriever uses '{self.model_id}'; embeddings of "
                f"different models are not comparable: use --model {recorded} or build a new index"
            )
        if self.index.model is None:
            self.index.model = self.model_id
        from safegen.core.fingerprint import short

        fp = self.index.model_fingerprint
        if fp and len(self.index) and fp != self.model_fingerprint:
            raise SafegenError(
                f"the index was built with weights {short(fp)} but '{self.model_id}' now holds weights "
                f"{short(self.model_fingerprint)} (re-trained or replaced since); their embeddings are not "
                "comparable: build a new index (`safegen retrieve build --overwrite`)"
            )
        self.index.model_fingerprint = self.model_fingerprint
        dim = getattr(getattr(self.model, "config", None), "projection_dim", None)
        if self.index.dim is not None and len(self.index) and dim is not None and dim != self.index.dim:
            raise SafegenError(f"the index holds {self.index.dim}-d embeddings but this CLIP makes {dim}-d ones")

    # -------------------------------------------------------------- building the index

    def add_images(
        self,
        images: Sequence[str | Path],
        *,
        ids: Sequence[str] | None = None,
        on_chunk: Callable[[], None] | None = None,
        chunk_size: int = 1024,
    ) -> AddReport:
        """Encode and index image files; unreadable files are reported (path and reason) and skipped.

        Items already in the index with the same file bytes (SHA-256) are skipped without being
        decoded, so adding a grown folder again only encodes its new files; a file whose bytes
        changed is re-encoded and replaces its old row. ``on_chunk`` (e.g. a save) is called
        after every ``chunk_size`` newly indexed images, so a long add killed midway keeps what
        was saved.
        """
        from safegen.data.image_io import iter_images

        report = AddReport()
        # Default ids are absolute paths, so "imgs/a.png" and "./imgs/a.png" are one item.
        ids = [str(Path(p).resolve()) for p in images] if ids is None else [str(i) for i in ids]
        if len(ids) != len(images):
            raise ValueError(f"got {len(ids)} ids for {len(images)} images")
        todo, stale = [], set()
        for item_id, path in zip(ids, images, strict=True):
            digest = _file_sha256(path)
            old = self.index.item(("image", item_id))
            if old is not None and (digest is None or old.get("sha256") in (None, digest)):
                report.skipped += 1  # an unreadable or legacy (no hash) entry is kept as it is
                continue
            if old is not None:
                stale.add(("image", item_id))
                report.changed += 1
            todo.append((item_id, path, digest))
        self.index.remove(stale)
        since_chunk = 0
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            good, pil = [], []
            for (item_id, _, digest), (path, image, error) in zip(
                batch, iter_images([p for _, p, _ in batch]), strict=True
            ):
                if error is not None:
                    report.errors.append(str(error))
                    continue
                good.append({"id": item_id, "kind": "image", "source": str(Path(path).resolve()), "sha256": digest})
                pil.append(image)
            if pil:
                added = self.index.add(self._encode(pil, "image"), good)
                report.added += added
                since_chunk += added
            if on_chunk is not None and since_chunk >= chunk_size:
                on_chunk()
                since_chunk = 0
        return report

    def add_texts(self, texts: Sequence[str], *, ids: Sequence[str] | None = None) -> AddReport:
        """Encode and index texts (the id defaults to the text itself; known ids are skipped)."""
        ids = list(texts) if ids is None else [str(i) for i in ids]
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        todo = [(i, t) for i, t in zip(ids, texts, strict=True) if ("text", i) not in self.index]
        report = AddReport(skipped=len(texts) - len(todo))
        if todo:
            emb = self.encode_texts([t for _, t in todo])
            report.added = self.index.add(emb, [{"id": i, "kind": "text", "source": t} for i, t in todo])
        return report

    def save(self, folder: str | Path) -> Path:
        """Persist the index (crash-safe, see :class:`RetrievalIndex`)."""
        return self.index.save(folder)

    # -------------------------------------------------------------- search

    def search(self, query: Any, k: int = 10, *, target: str = "auto") -> list[SearchHit]:
        """Top-k indexed items for a text (``str``) or an image (PIL image or ``Path``).

        ``target`` picks which items compete: "image", "text", "all", or "auto" (the other
        modality, i.e. text-to-image or image-to-text retrieval, when the index holds any;
        otherwise everything).
        """
        from PIL import Image

        if isinstance(query, str):
            kind, emb = "text", self.encode_texts([query])
        elif isinstance(query, (Path, Image.Image)):
            kind, emb = "image", self.encode_images([query])
        else:
            raise TypeError(f"query must be a str (text), a Path or a PIL image, got {type(query).__name__}")
        return self.index.search(emb, k, kinds=self._target_kinds(kind, target))[0]

    def _target_kinds(self, query_kind: str, target: str) -> tuple[str, ...] | None:
        if target == "all":
            return None
        if target in KINDS:
            return (target,)
        if target != "auto":
            raise ValueError(f"target must be auto, image, text or all, got {target!r}")
        other = "image" if query_kind == "text" else "text"
        return (other,) if self.index.count(other) else None


def _file_sha256(path: str | Path) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None  # reported when the image is read
