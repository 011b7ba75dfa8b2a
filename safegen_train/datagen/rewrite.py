"""Stage 1, ``rewrite``: safe captions -> unsafe captions written by a causal or chat language model.

Why it is built this way:

- Any transformers causal LM or chat model (hub id or folder) can rewrite; prompts come
  from the taxonomy (one template, concept description, few-shot examples), wrapped in
  the model's chat template when it has one.
- Every row (caption x concept) has its own seed, recorded with the sampling settings,
  so a row's text does not depend on batching, resuming or sharding.
- Resumable and shardable the way ``safegen batch`` is, with its manifest machinery: a
  row is appended to ``manifest.jsonl`` (or the shard's part) once written, a re-run skips
  recorded rows, shards take every N-th caption. Refusals and empty replies are recorded
  (so they are not retried forever) and counted, never kept as unsafe captions.
- A caption longer than ``max_caption_chars`` never reaches the model: one 10 MB line made
  the tokenizer and attention ask for terabytes and stopped the whole run, again on every
  re-run. Such a row is reported with file:line, recorded as ``rejected`` and the rest
  runs; a later run with a higher limit writes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safegen.core.devices import resolve_device
from safegen.core.errors import SafegenError, UsageError
from safegen.core.io import atomic_write_json
from safegen.core.output_folder import check_output_folder, claim_output_folder
from safegen.jobs.manifest import ManifestWriter, part_name, read_manifest
from safegen_train.datagen.captions import DEFAULT_MAX_CAPTION_CHARS, Caption, read_captions
from safegen_train.datagen.engines import SamplingConfig, create_engine
from safegen_train.datagen.prompting import as_chat, build_prompt, clean_reply, is_refusal
from safegen_train.datagen.taxonomy import Taxonomy, TaxonomyError, load_taxonomy

_logger = logging.getLogger(__name__)

RUN_JSON = "run.json"
REWRITE_COMMAND = "safegen-train data rewrite"  # what the output marker of a rewrite folder names
STATUSES = ("ok", "refused", "empty", "rejected")
# Settings that change the text: a resumed run must use the same ones.
_RESUME_KEYS = ("rewriter", "engine", "taxonomy", "sampling", "seed", "concepts_per_caption", "chat")


@dataclass
class RewriteConfig:
    """Everything a rewrite run needs; saved (resolved) as ``run.json`` in the output folder."""

    captions: str | Path = field(metadata={"help": "Safe captions: .txt, .jsonl or .csv."})
    out: str | Path = field(metadata={"help": "Output folder (manifest.jsonl, run.json)."})
    model: str | None = field(default=None, metadata={"help": "Rewriter: causal/chat LM hub id or folder."})
    taxonomy: str | Path | None = field(default=None, metadata={"help": "Taxonomy file; None: I2P's seven."})
    concepts: list[str] | None = field(default=None, metadata={"help": "Use only these concepts of the taxonomy."})
    concepts_per_caption: int = field(default=1, metadata={"help": "Concepts written per caption; 0: all of them."})
    seed: int = field(default=0, metadata={"help": "Seed of the first row; row i uses seed + i."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation call."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0: off)."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest reply in tokens."})
    engine: str = field(default="auto", metadata={"help": "auto, transformers or vllm."})
    chat: str = field(default="auto", metadata={"help": "auto (chat template when the tokenizer has one), yes, no."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1."})
    dtype: str = field(default="auto", metadata={"help": "auto, fp32, fp16, bf16."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N captions."})
    max_caption_chars: int = field(
        default=DEFAULT_MAX_CAPTION_CHARS,
        metadata={"help": "Longer captions are not rewritten: reported with file:line and recorded as rejected."},
    )
    num_shards: int = field(default=1, metadata={"help": "Split the captions over this many jobs."})
    shard_index: int = field(default=0, metadata={"help": "Which shard this job runs (0-based)."})

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> UsageError:
            return UsageError(f"rewrite config: {name} {why}")

        if self.concepts_per_caption < 0:
            raise bad("concepts_per_caption", f"must be >= 0, got {self.concepts_per_caption}")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.chat not in ("auto", "yes", "no"):
            raise bad("chat", f"must be auto, yes or no, got '{self.chat}'")
        if self.limit is not None and self.limit < 1:
            raise bad("limit", f"must be >= 1, got {self.limit}")
        if self.max_caption_chars < 1:
            raise bad("max_caption_chars", f"must be >= 1, got {self.max_caption_chars}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise bad("shard_index", f"must be in [0, {self.num_shards}), got {self.shard_index}")
        SamplingConfig(self.temperature, self.top_p, self.top_k, self.max_new_tokens)  # raises on bad values

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_p, self.top_k, self.max_new_tokens)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("captions", "out", "taxonomy"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


@dataclass
class RewriteRow:
    """One thing to write: a caption, a concept, a seed."""

    id: str
    caption: Caption
    concept: str
    seed: int
    ordinal: int  # position of the caption among the file's captions (sharding key)


@dataclass
class RewriteResult:
    """What one process of a rewrite run did."""

    out: str
    planned: int = 0  # rows this shard owns
    skipped: int = 0  # done by an earlier run
    generated: int = 0  # rows written by this run
    kept: int = 0  # status ok (this run)
    refused: int = 0
    empty: int = 0
    rejected: int = 0  # rows whose caption is over max_caption_chars (not rewritten)
    seconds: float = 0.0
    rows_per_s: float = 0.0
    shard_index: int = 0
    num_shards: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_rows(captions: list[Caption], taxonomy: Taxonomy, per_caption: int, seed: int) -> list[RewriteRow]:
    """Caption x concept rows, seeds ``seed, seed+1, ...`` in file order.

    A caption that names its concepts gets those; the others get ``per_caption`` concepts
    dealt round-robin (0: every concept), so concepts are balanced and the plan is fixed.
    """
    names = taxonomy.names
    k = len(names) if per_caption == 0 else min(per_caption, len(names))
    rows: list[RewriteRow] = []
    for ordinal, cap in enumerate(captions):
        if cap.concepts:
            chosen = cap.concepts
            for c in chosen:
                if c not in names:
                    raise TaxonomyError(
                        f"caption line {cap.line} asks for concept '{c}', which the taxonomy lacks "
                        f"({', '.join(names)})"
                    )
        else:
            start = (ordinal * k) % len(names)
            chosen = [names[(start + j) % len(names)] for j in range(k)]
        for concept in chosen:
            rows.append(RewriteRow(f"{cap.id}::{concept}", cap, concept, seed + len(rows), ordinal))
    return rows


class Rewriter:
    """Runs one process's share of a rewrite job (see the module docstring).

    Args:
        config: the run's settings.
        engine: an already built engine (``TransformersEngine``/``VLLMEngine``); None builds one from ``config``.
        taxonomy: a :class:`Taxonomy` object; None reads ``config.taxonomy``.
        progress: called after every batch with ``(done_rows, total_rows)`` of this shard.
        report: called with one line per rejected caption (default: a logged warning).
    """

    def __init__(
        self,
        config: RewriteConfig,
        *,
        engine: Any = None,
        taxonomy: Taxonomy | None = None,
        progress: Callable[[int, int], None] | None = None,
        report: Callable[[str], None] | None = None,
    ):
        self.config = config
        self.report = report or _logger.warning
        self.out = Path(config.out).resolve()
        self.engine = engine
        self.taxonomy = (taxonomy or load_taxonomy(config.taxonomy)).select(config.concepts)
        self.progress = progress

    def _resolved(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "captions": str(Path(self.config.captions).resolve()),
            "rewriter": self.engine.describe()["model"],
            "engine": self.engine.name,
            "chat": self.use_chat,
            "taxonomy": self.taxonomy.to_dict(),
            "sampling": self.config.sampling.to_dict(),
        }

    @property
    def use_chat(self) -> bool:
        mode = self.config.chat
        return mode == "yes" or (mode == "auto" and bool(getattr(self.engine, "chat", False)))

    def prompt(self, row: RewriteRow) -> str:
        text = build_prompt(self.taxonomy, self.taxonomy.get(row.concept), row.caption.text)
        return as_chat(self.engine.tokenizer, text) if self.use_chat else text

    def run(self) -> RewriteResult:
        cfg = self.config
        check_output_folder(self.out, REWRITE_COMMAND)  # a user's folder is refused before any model loads
        captions = read_captions(cfg.captions)  # bad input fails before any model loads
        if cfg.limit:
            captions = captions[: cfg.limit]
        rows = plan_rows(captions, self.taxonomy, cfg.concepts_per_caption, cfg.seed)
        if self.engine is None:
            if not cfg.model:
                raise UsageError("no rewriter given: pass --model (a causal or chat LM hub id or folder)")
            self.engine = create_engine(
                cfg.model, engine=cfg.engine, device=resolve_device(cfg.device), dtype=cfg.dtype
            )
        claim_output_folder(self.out, REWRITE_COMMAND)
        resolved = self._resolved()
        run_json = self.out / RUN_JSON
        previous = json.loads(run_json.read_text()) if run_json.is_file() else None
        if previous:
            old = previous.get("config", {})
            changed = [k for k in _RESUME_KEYS if k in old and old[k] != resolved.get(k)]
            if changed:
                raise SafegenError(
                    f"{self.out} holds a rewrite run with other settings ({', '.join(changed)}); "
                    "resume with the same options, or pick a new --out"
                )
        if previous is None or cfg.shard_index == 0:
            atomic_write_json(
                run_json,
                {
                    "config": resolved,
                    "captions_sha256": hashlib.sha256(Path(cfg.captions).read_bytes()).hexdigest(),
                    "captions": len(captions),
                    "planned_rows": len(rows),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                },
            )
        mine = [r for r in rows if r.ordinal % cfg.num_shards == cfg.shard_index]
        recorded = {str(r["id"]): r.get("status") for r in read_manifest(self.out)}
        # Recorded rows are done, except rejections: each run checks them against its own limit.
        pending = [r for r in mine if recorded.get(r.id) in (None, "rejected")]
        rejects = [r for r in pending if len(r.caption.text) > cfg.max_caption_chars]
        todo = [r for r in pending if len(r.caption.text) <= cfg.max_caption_chars]
        result = RewriteResult(
            out=str(self.out),
            planned=len(mine),
            skipped=len(mine) - len(todo) - len(rejects),
            shard_index=cfg.shard_index,
            num_shards=cfg.num_shards,
        )
        if result.skipped:
            _logger.info("resuming: %d of %d rows already written", result.skipped, len(mine))
        sampling = cfg.sampling
        start = time.perf_counter()
        with ManifestWriter(self.out / part_name(cfg.shard_index, cfg.num_shards)) as manifest:
            if rejects:
                # Said on every run (a re-run should say why rows stay unwritten), recorded once.
                self._report_long(rejects)
                manifest.append([self._rejected(r, resolved) for r in rejects if r.id not in recorded])
                result.rejected = len(rejects)
            for b in range(0, len(todo), cfg.batch_size):
                batch = todo[b : b + cfg.batch_size]
                replies = self.engine.generate([self.prompt(r) for r in batch], [r.seed for r in batch], sampling)
                records = [self._record(r, reply, resolved) for r, reply in zip(batch, replies, strict=True)]
                manifest.append(records)
                for rec in records:
                    result.generated += 1
                    result.kept += rec["status"] == "ok"
                    result.refused += rec["status"] == "refused"
                    result.empty += rec["status"] == "empty"
                if self.progress is not None:
                    self.progress(result.skipped + result.generated, len(mine))
        result.seconds = time.perf_counter() - start
        result.rows_per_s = result.generated / result.seconds if result.seconds > 0 else 0.0
        return result

    def _report_long(self, rejects: list[RewriteRow]) -> None:
        """One line per over-long caption (a caption with several concepts is several rows, one problem)."""
        limit, seen = self.config.max_caption_chars, set()
        for row in rejects:
            if row.caption.line in seen:
                continue
            seen.add(row.caption.line)
            self.report(
                f"{self.config.captions}:{row.caption.line}: caption is {len(row.caption.text):,} characters, over "
                f"the {limit:,}-character limit; not rewritten, recorded as rejected (shorten it or raise "
                "--max-caption-chars)"
            )

    def _rejected(self, row: RewriteRow, resolved: dict[str, Any]) -> dict[str, Any]:
        """The manifest line of an over-long caption: enough to find it, not the megabytes themselves."""
        record = self._record(row, "", resolved)
        record.update(
            status="rejected",
            unsafe_text=None,
            safe_text=row.caption.text[:200],
            safe_text_chars=len(row.caption.text),
            reason=f"caption over {self.config.max_caption_chars:,} characters",
        )
        return record

    def _record(self, row: RewriteRow, reply: str, resolved: dict[str, Any]) -> dict[str, Any]:
        if is_refusal(reply):
            status, text = "refused", None
        else:
            text = clean_reply(reply) or None
            status = "ok" if text else "empty"
        return {
            "id": row.id,
            "seed": row.seed,
            "row": row.ordinal,
            "source_id": row.caption.id,
            "source_line": row.caption.line,
            "safe_text": row.caption.text,
            "safe_image": row.caption.image,
            "concept": row.concept,
            "status": status,
            "unsafe_text": text,
            "reply": reply[:500],
            "rewriter": resolved["rewriter"],
            "engine": resolved["engine"],
            "sampling": resolved["sampling"],
            "meta": row.caption.meta,
            "shard": self.config.shard_index,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def run_rewrite(
    config: RewriteConfig | None = None, /, *, engine: Any = None, taxonomy: Taxonomy | None = None, **options
):
    """Rewrite captions: ``run_rewrite(RewriteConfig(...))`` or ``run_rewrite(captions=..., out=..., model=...)``."""
    if config is None:
        config = RewriteConfig(**options)
    elif options:
        raise TypeError("pass either a RewriteConfig or keyword options, not both")
    return Rewriter(config, engine=engine, taxonomy=taxonomy).run()


def read_rewrites(out: str | Path) -> list[dict[str, Any]]:
    """Every rewrite record under ``out`` (all shards), in plan order."""
    out = Path(out)
    if not (out / RUN_JSON).is_file():
        raise UsageError(f"'{out}' is not a rewrite output folder (no {RUN_JSON}); pass the --out of `data rewrite`")
    records = read_manifest(out)
    records.sort(key=lambda r: int(r["seed"]))
    return records
