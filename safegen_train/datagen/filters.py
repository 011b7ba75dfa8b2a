"""Stage 2, ``filter``: keep a rewrite only when it is unsafe for its concept, close to its caption, new.

Why three filters: a rewriter's reply can fail in three ways that would poison training
data. It can miss the concept (a paraphrase, a lecture the refusal detector did not catch),
drift away from the scene (the safe and unsafe texts must describe the same picture, or
the redirection losses teach the wrong thing), or repeat itself. Each filter is pluggable
and every rejection is counted per filter, so a dataset card can say what was thrown away.

- concept judge: a text classifier says the rewrite shows its concept. The word list of
  :mod:`safegen.evaluation.text_safety` (words taken from the taxonomy) or any transformers
  text-classification model (the concept's ``text_labels``, else any unsafe label).
- closeness: cosine of the base CLIP's projected text embeddings of safe and unsafe text.
- duplicates: the same unsafe text (case, spaces and punctuation ignored) kept once; a
  rewrite equal to its safe caption counts as unchanged.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safegen.core.errors import UsageError
from safegen.core.io import atomic_write_json, atomic_write_text, jsonl_rows
from safegen.core.output_folder import check_output_folder, claim_output_folder
from safegen_train.datagen.rewrite import RUN_JSON, read_rewrites
from safegen_train.datagen.taxonomy import Taxonomy

_logger = logging.getLogger(__name__)

FILTERED = "filtered.jsonl"
REJECTED = "rejected.jsonl"
FILTER_JSON = "filter.json"
FILTER_COMMAND = "safegen-train data filter"  # what the output marker of a filter folder names
FILTER_NAMES = ("unchanged", "concept", "similarity", "duplicate")  # the order they run in


@dataclass
class FilterConfig:
    """Settings of the text filters; saved in ``filter.json``."""

    rewrites: str | Path = field(metadata={"help": "Output folder of `data rewrite`."})
    out: str | Path = field(metadata={"help": "Output folder (filtered.jsonl, rejected.jsonl, filter.json)."})
    clip: str | None = field(default=None, metadata={"help": "Base CLIP for closeness; None skips that filter."})
    min_similarity: float = field(default=0.6, metadata={"help": "Least cosine(safe, unsafe) of the base CLIP."})
    text_classifier: str = field(default="wordlist", metadata={"help": "'wordlist' or a text-classification model."})
    text_threshold: float = field(default=0.5, metadata={"help": "Score a text-classification label must reach."})
    unsafe_labels: list[str] | None = field(
        default=None, metadata={"help": "Labels of the model that mean unsafe (default: every concept's labels)."}
    )
    dedupe: bool = field(default=True, metadata={"help": "Drop repeated unsafe texts."})
    batch_size: int = field(default=64, metadata={"help": "Texts per CLIP / classifier call."})

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_similarity <= 1.0:
            raise UsageError(f"filter config: min_similarity must be in [-1, 1], got {self.min_similarity}")
        if self.batch_size < 1:
            raise UsageError(f"filter config: batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rewrites"], d["out"] = str(self.rewrites), str(self.out)
        return d


class ConceptJudge:
    """Does a text show its concept? Word list (default) or a transformers text-classification model."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        classifier: str | Any = "wordlist",
        *,
        threshold: float = 0.5,
        unsafe_labels: Sequence[str] | None = None,
    ):
        from safegen.evaluation.text_safety import HFTextClassifier, WordListTextClassifier

        self.taxonomy = taxonomy
        self.kind = "wordlist" if classifier == "wordlist" else "model"
        if classifier == "wordlist":
            missing = [c.name for c in taxonomy.concepts if not c.words]
            if missing:
                raise UsageError(
                    f"the word-list judge needs words for every concept; '{missing[0]}' has none "
                    "(add `words:` to the taxonomy, or pass a text-classification model)"
                )
            self.classifier = WordListTextClassifier(taxonomy.words())
        elif isinstance(classifier, str):
            labels = list(unsafe_labels or [])
            if not labels:
                labels = sorted({lab for c in taxonomy.concepts for lab in c.text_labels})
            if not labels:
                raise UsageError(
                    f"text classifier '{classifier}' needs the labels that mean unsafe: pass unsafe_labels "
                    "(--unsafe-label) or give concepts text_labels in the taxonomy"
                )
            self.classifier = HFTextClassifier(classifier, labels, threshold=threshold)
        else:  # any object with classify(texts) -> verdicts and describe()
            self.classifier = classifier
            self.kind = "model"

    def judge(self, texts: Sequence[str], concepts: Sequence[str]) -> list[tuple[bool, float]]:
        """(shows its concept, score) per text."""
        verdicts = self.classifier.classify(list(texts))
        out = []
        for verdict, concept in zip(verdicts, concepts, strict=True):
            if self.kind == "wordlist":
                ok = concept in verdict.concepts
                out.append((ok, 1.0 if ok else 0.0))
                continue
            wanted = {lab.lower() for lab in self.taxonomy.get(concept).text_labels}
            if wanted:
                ok = any(c.lower() in wanted for c in verdict.concepts)
            else:
                ok = bool(verdict.unsafe)
            out.append((ok, float(verdict.score)))
        return out

    def describe(self) -> dict[str, Any]:
        return self.classifier.describe()


class TextSimilarity:
    """Cosine similarity of text pairs under a CLIP's projected text embeddings."""

    def __init__(self, clip: str | Any, tokenizer: Any = None, *, device: str = "cpu", batch_size: int = 64):
        if isinstance(clip, str):
            from safegen_train.model import load_clip

            loaded = load_clip(clip)
            self.model, self.tokenizer, self.source = loaded.model, loaded.tokenizer, clip
        else:
            self.model, self.tokenizer = clip, tokenizer
            self.source = str(getattr(clip.config, "_name_or_path", "") or type(clip).__name__)
        self.model.to(device).eval()
        self.device, self.batch_size = device, batch_size
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def embed(self, texts: Sequence[str]) -> Any:
        """(N, D) L2-normalised projected text embeddings."""
        import torch

        parts = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                tok = self.tokenizer(
                    list(texts[i : i + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                feats = self.model.get_text_features(**tok)
                feats = getattr(feats, "pooler_output", feats)  # transformers 5 returns an output object
                parts.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(parts) if parts else torch.zeros(0, 1)

    def pairs(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """cos(a[i], b[i]) for every i."""
        if not a:
            return []
        ea, eb = self.embed(a), self.embed(b)
        return [float(x) for x in (ea * eb).sum(-1)]


def normalise_text(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed (the duplicate key)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass
class FilterResult:
    """Counts of a filter pass: rewrites in, kept, and rejected per filter (plus upstream statuses)."""

    out: str
    rewrites: int = 0  # rows the rewrite stage recorded
    candidates: int = 0  # rows with a caption (status ok)
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)  # ok / refused / empty from the rewrite stage
    seconds: float = 0.0

    def pass_rates(self) -> dict[str, float]:
        """Share of the candidates reaching each filter that it lets through, in filter order."""
        rates, alive = {}, self.candidates
        for name in FILTER_NAMES:
            if name in self.rejected:
                rates[name] = (alive - self.rejected[name]) / alive if alive else 0.0
                alive -= self.rejected[name]
        return rates

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pass_rates"] = self.pass_rates()
        return d


def run_filters(
    config: FilterConfig,
    *,
    judge: ConceptJudge | None = None,
    similarity: TextSimilarity | None = None,
) -> FilterResult:
    """Filter a rewrite folder into ``filtered.jsonl`` (kept, with scores) and ``rejected.jsonl`` (with reasons)."""
    start = time.perf_counter()
    check_output_folder(config.out, FILTER_COMMAND)  # before any work
    records = read_rewrites(config.rewrites)
    run = json.loads((Path(config.rewrites) / RUN_JSON).read_text())
    taxonomy = Taxonomy.from_dict(run["config"]["taxonomy"], f"{config.rewrites}/{RUN_JSON}")
    out = Path(config.out)
    claim_output_folder(out, FILTER_COMMAND)  # before any model loads
    result = FilterResult(out=str(out), rewrites=len(records))
    result.statuses = dict(Counter(r.get("status", "ok") for r in records))
    rows = [dict(r) for r in records if r.get("status") == "ok" and r.get("unsafe_text")]
    result.candidates = len(rows)
    if judge is None:
        judge = ConceptJudge(
            taxonomy, config.text_classifier, threshold=config.text_threshold, unsafe_labels=config.unsafe_labels
        )
    if similarity is None and config.clip:
        similarity = TextSimilarity(config.clip, batch_size=config.batch_size)
    rejected: list[dict[str, Any]] = []
    counts = Counter({"unchanged": 0, "concept": 0})

    def reject(row: dict[str, Any], name: str) -> None:
        counts[name] += 1
        rejected.append({**row, "rejected_by": name})

    alive = []
    for row in rows:
        if normalise_text(row["unsafe_text"]) == normalise_text(row["safe_text"]):
            reject(row, "unchanged")
        else:
            alive.append(row)
    rows, alive = alive, []
    verdicts = judge.judge([r["unsafe_text"] for r in rows], [r["concept"] for r in rows])
    for row, (ok, score) in zip(rows, verdicts, strict=True):
        row["concept_score"] = score
        if ok:
            alive.append(row)
        else:
            reject(row, "concept")
    if similarity is not None:
        counts.setdefault("similarity", 0)
        rows, alive = alive, []
        sims = similarity.pairs([r["safe_text"] for r in rows], [r["unsafe_text"] for r in rows])
        for row, sim in zip(rows, sims, strict=True):
            row["text_similarity"] = sim
            if sim >= config.min_similarity:
                alive.append(row)
            else:
                reject(row, "similarity")
    if config.dedupe:
        counts.setdefault("duplicate", 0)
        rows, alive, seen = alive, [], set()
        for row in rows:
            key = normalise_text(row["unsafe_text"])
            if key in seen:
                reject(row, "duplicate")
            else:
                seen.add(key)
                alive.append(row)
    result.kept = len(alive)
    result.rejected = {k: counts[k] for k in FILTER_NAMES if k in counts}
    result.seconds = time.perf_counter() - start
    atomic_write_text(out / FILTERED, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in alive))
    atomic_write_text(out / REJECTED, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
    atomic_write_json(
        out / FILTER_JSON,
        {
            "config": config.to_dict(),
            "judge": judge.describe(),
            "similarity": {"clip": similarity.source} if similarity is not None else None,
            "taxonomy": taxonomy.to_dict(),
            "rewrite_run": str(Path(config.rewrites).resolve()),
            "result": result.to_dict(),
        },
    )
    return result


def read_filtered(folder: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, filter.json) of a filter output folder."""
    folder = Path(folder)
    if not (folder / FILTER_JSON).is_file():
        raise UsageError(
            f"'{folder}' is not a filter output folder (no {FILTER_JSON}); pass the --out of `data filter`"
        )
    rows = [json.loads(line) for _, line in jsonl_rows((folder / FILTERED).read_text(encoding="utf-8"))]
    return rows, json.loads((folder / FILTER_JSON).read_text())
