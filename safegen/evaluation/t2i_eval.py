"""`safegen eval t2i`: unsafe rate and quality of several methods on the same prompts and seeds.

Generation goes through the batch runner (one run folder per method and prompt set), so an
evaluation is resumable and shardable like any batch job: re-running the same command
skips finished images and rebuilds the report from the manifests.

Output layout::

    OUT/report.json, report.md, *.png           the report (report.json: the contract)
    OUT/prompts/{eval,quality}.jsonl           the prompt sets every method reads (long prompts cut once)
    OUT/runs/<method>/prompts/                 batch run on the evaluated prompts
    OUT/runs/<method>/quality/                 batch run on the quality prompts (optional)
    OUT/contact_<method>.png                   sample sheet, flagged images blurred
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from safegen.core.checks import MAX_STEPS, check_count, check_number, check_seed
from safegen.core.devices import check_device, resolve_dtype
from safegen.core.errors import UsageError
from safegen.core.io import atomic_write_json, atomic_write_text
from safegen.core.terminal import job_progress
from safegen.evaluation.methods import DEFAULT_SAFETY_CONCEPT, Method, build_methods
from safegen.evaluation.prompt_set import PreparedPrompts, prepare_prompts
from safegen.evaluation.quality import ClipScorer, fid, fid_available
from safegen.evaluation.report import contact_sheet
from safegen.evaluation.stats import group_by, split_categories, summarize
from safegen.jobs import BatchConfig, BatchRunner
from safegen.models.encoders import load_safe_text_encoder
from safegen.pipelines.loading import load_t2i_pipeline
from safegen.safety import load_classifier
from safegen.safety.judges import ensure_known

_logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("original", "safe-clip", "negative-prompt", "sld-medium", "safe-clip+sld-medium")


class EvalConfigError(UsageError):
    """A field of an evaluation config (:class:`T2IEvalConfig`, ``AttackEvalConfig``) that does not make a
    runnable request.

    ``field`` names it and ``reason`` says what is wrong; the message is "eval config: FIELD REASON"
    (`safegen eval t2i` / `eval attack` say "--FLAG REASON" instead: cli/eval.py maps the field to its flag).
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"eval config: {field} {reason}")
        self.field = field
        self.reason = reason


def _check(name: str, check: Callable[[], object]) -> None:
    """Run one of core/checks' checks on field ``name``; its error (the name it was given, then the reason)
    becomes the field's, so the limits and their wording have one home."""
    try:
        check()
    except UsageError as exc:
        raise EvalConfigError(name, str(exc).split(" ", 1)[-1]) from None


@dataclass
class T2IEvalConfig:
    """Settings of a text-to-image evaluation (saved in report.json)."""

    prompts: str = field(metadata={"help": "Prompt file (I2P CSV, research CSV, txt, jsonl)."})
    out: str = field(metadata={"help": "Output folder."})
    base: str = field(metadata={"help": "Base pipeline id or folder."})
    safe_encoder: str | None = field(default=None, metadata={"help": "Safe-CLIP text encoder."})
    safe_encoder_kwargs: dict = field(
        default_factory=dict, metadata={"help": "Encoder loader options (activation, base: --activation/--base)."}
    )
    methods: Sequence[str] = field(default=DEFAULT_METHODS, metadata={"help": "Methods to compare."})
    classifier: str = field(default="nudenet", metadata={"help": "Output classifier name (nudenet, q16, i2p, toy)."})
    classifier_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Keyword options of the classifier (e.g. q16/i2p 'clip', 'prompts')."}
    )
    judges: Sequence[str] = field(
        default=(),
        metadata={"help": "Judges scoring the same images (first: the run's own check); empty: [classifier]."},
    )
    judge_options: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "Per judge: runtime options (device, q16 'clip')."}
    )
    steps: int = field(default=30, metadata={"help": "Denoising steps."})
    guidance: float = field(default=7.5, metadata={"help": "Guidance scale of rows without their own."})
    width: int | None = None
    height: int | None = None
    seed: int = field(default=0, metadata={"help": "Seed of rows without their own."})
    batch_size: int = 4
    limit: int | None = field(default=None, metadata={"help": "First N prompts only."})
    negative_prompt: str = field(default=DEFAULT_SAFETY_CONCEPT, metadata={"help": "For the negative-prompt method."})
    safety_concept: str = field(default=DEFAULT_SAFETY_CONCEPT, metadata={"help": "SLD's safety concept."})
    quality_prompts: str | None = field(default=None, metadata={"help": "Safe prompts for quality retention."})
    quality_limit: int | None = None
    clip_score_model: str | None = field(default=None, metadata={"help": "CLIP for the CLIP score."})
    fid: bool = field(default=False, metadata={"help": "FID against the original's images (needs torchmetrics)."})
    device: str = "cpu"
    dtype: str = "auto"
    num_shards: int = 1
    shard_index: int = 0
    max_failed_share: float = field(
        default=0.01, metadata={"help": "Fail when a method could not generate more than this share of its images."}
    )

    def __post_init__(self) -> None:
        check_run_settings(self)
        if self.judges:
            try:
                ensure_known(list(self.judges))  # known names, each once
            except UsageError as exc:
                raise EvalConfigError("judges", f"has {exc}") from None
        at_least_one(self, "quality_limit")
        at_least_one(self, "num_shards")
        if not 0 <= self.shard_index < self.num_shards:
            shards = f"one of the {self.num_shards} shards, counting from 0"
            raise EvalConfigError(
                "shard_index", f"must be in [0, {self.num_shards}) ({shards}), got {self.shard_index}"
            )
        _check("max_failed_share", lambda: check_number(self.max_failed_share, "max_failed_share", maximum=1.0))

    def judge_names(self) -> list[str]:
        """The judges of this evaluation; the first is the batch runs' own check."""
        return list(self.judges) or [self.classifier]

    def options_of(self, judge: str) -> dict[str, Any]:
        if judge in self.judge_options:
            return dict(self.judge_options[judge])
        return dict(self.classifier_options) if judge == self.classifier else {}


def at_least_one(cfg: Any, name: str) -> None:
    """Field ``name`` of ``cfg`` is None (where that means "all") or >= 1."""
    value = getattr(cfg, name)
    if value is not None and value < 1:
        raise EvalConfigError(name, f"must be >= 1, got {value}")


def check_run_settings(cfg: Any) -> None:
    """What both evaluation configs check alike (eval t2i, eval attack), before any model loads."""
    if not cfg.methods:
        raise EvalConfigError("methods", "is empty: name at least one method (e.g. original,safe-clip)")
    _check("steps", lambda: check_count(cfg.steps, "steps", MAX_STEPS))
    _check("guidance", lambda: check_number(cfg.guidance, "guidance"))
    for name in ("width", "height"):
        value = getattr(cfg, name)
        if value is not None and (value <= 0 or value % 8):
            raise EvalConfigError(name, f"must be a positive multiple of 8, got {value}")
    _check("seed", lambda: check_seed(cfg.seed, "seed"))
    at_least_one(cfg, "batch_size")
    at_least_one(cfg, "limit")
    _check("device", lambda: check_device(cfg.device))


def run_method(cfg: T2IEvalConfig, method: Method, prompts: str, folder: Path, classifier: Any, limit: int | None):
    """One batch run of ``method`` on a prompt file into ``folder``: its result and the records that count."""
    bcfg = BatchConfig(
        prompts=prompts,
        out=folder,
        model=cfg.base,
        steps=cfg.steps,
        guidance=cfg.guidance,
        width=cfg.width,
        height=cfg.height,
        negative_prompt=method.negative_prompt or "",
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        device=cfg.device,
        dtype=cfg.dtype,
        check=getattr(classifier, "name", None) if classifier is not None else None,
        limit=limit,
        num_shards=cfg.num_shards,
        shard_index=cfg.shard_index,
    )
    with job_progress(f"{method.name}: {Path(prompts).name}") as bar:
        runner = BatchRunner(
            bcfg,
            pipe=method.pipe,
            classifier=classifier,
            call_kwargs=method.call_kwargs,
            record_extra={"method": method.name},
            progress=lambda done, total: bar.update(done, total),
        )
        result = runner.run()
    _record_timing(folder, result.generated, result.seconds)
    # Only images whose content key matches this configuration count in the report.
    return result, runner.current_records()


def _record_timing(folder: Path, images: int, seconds: float) -> None:
    """Accumulate generation time across resumed runs (a resumed run generates only the rest)."""
    path = folder / "timing.json"
    prev = json.loads(path.read_text()) if path.is_file() else {"images": 0, "seconds": 0.0}
    if images:
        prev = {"images": prev["images"] + images, "seconds": prev["seconds"] + seconds}
        atomic_write_json(path, prev)


def _seconds_per_image(folder: Path) -> float | None:
    path = folder / "timing.json"
    if not path.is_file():
        return None
    t = json.loads(path.read_text())
    return t["seconds"] / t["images"] if t.get("images") else None


def load_images(folder: Path, records: list[dict[str, Any]]) -> list[Any]:
    """The RGB images of manifest ``records`` (their ``file`` relative to ``folder``), in order."""
    images = []
    for rec in records:
        with Image.open(folder / rec["file"]) as im:
            images.append(im.convert("RGB"))
    return images


def _summarize_groups(groups: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {
        name: summarize([r["safety"]["unsafe"] for r in rs], [float(r["safety"]["score"]) for r in rs])
        for name, rs in sorted(groups.items())
    }


def _fidelity_by_structure(records: list[dict[str, Any]], per_image: list[float | None]) -> dict[str, Any]:
    """Attribute fidelity per sentence shape of the safe prompts (their ``structure`` key), when they carry one."""
    by: dict[str, list[float]] = {}
    for rec, f in zip(records, per_image, strict=True):
        shape = (rec.get("meta") or {}).get("structure")
        if shape and f is not None:
            by.setdefault(str(shape), []).append(f)
    if not by:
        return {}
    return {"attribute_fidelity_by_structure": {k: sum(v) / len(v) for k, v in sorted(by.items())}}


def judge_records(
    cache: Path, folder: Path, records: list[dict[str, Any]], judge: Any, batch_size: int = 16
) -> list[dict[str, Any]]:
    """``records`` with ``safety`` replaced by ``judge``'s verdict on each image file.

    Verdicts are cached in ``cache`` (a JSONL keyed by the PNG's sha256 and the judge's
    description), so re-running an evaluation scores only images it has not scored before.
    """
    described = json.dumps(judge.describe(), sort_keys=True, default=str)
    tag = hashlib.sha256(described.encode()).hexdigest()[:16]
    known: dict[str, dict[str, Any]] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if entry.get("judge") == tag:
                known[entry["sha256"]] = entry["safety"]
    todo = [r for r in records if r.get("file") and r.get("sha256") not in known]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        for rec, verdict in zip(chunk, judge.classify(load_images(folder, chunk)), strict=True):
            known[rec["sha256"]] = {"classifier": judge.name, **verdict.to_dict()}
    if todo:
        lines = [json.dumps({"judge": tag, "sha256": k, "safety": v}) for k, v in sorted(known.items())]
        atomic_write_text(cache, "\n".join(lines) + "\n")
    return [{**r, "safety": known.get(r.get("sha256"))} for r in records]


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Unsafe rate overall, per prompt category and per generalisation axis from scored manifest lines."""
    scored = [r for r in records if r.get("safety")]
    entry = summarize([r["safety"]["unsafe"] for r in scored], [float(r["safety"]["score"]) for r in scored])
    by = group_by(scored, lambda r: split_categories((r.get("meta") or {}).get("categories")) or ["uncategorised"])
    if set(by) != {"uncategorised"}:
        entry["by_category"] = _summarize_groups(by)
    # A prompt's "axis" (in-distribution, held-out wording, held-out structure, ...) says along
    # which way it departs from the training data: a safety claim holds per axis, not on average.
    axes = group_by([r for r in scored if (r.get("meta") or {}).get("axis")], lambda r: [str(r["meta"]["axis"])])
    if axes:
        entry["by_axis"] = _summarize_groups(axes)
    return entry


Key = tuple[str, int]  # (row id, seed): one image of the prompt set


def _key(record: dict[str, Any]) -> Key:
    return str(record["id"]), int(record["seed"])


def common_images(
    done: dict[str, dict[Key, dict[str, Any]]], failures: dict[str, dict[Key, str]], planned: int | None = None
) -> tuple[set[Key], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The (id, seed) pairs every method generated, the excluded ones with why, and per-method losses.

    ``done`` maps a method to its manifest records by key; ``failures`` to the reasons of the
    images it could not generate in this run. A pair missing from any method is left out of
    every method's rates, so all rates are over the same images.
    """
    all_keys: set[Key] = set()
    for name in done:
        all_keys |= set(done[name]) | set(failures.get(name, {}))
    common = set.intersection(*(set(d) for d in done.values())) if done else set()
    total = max(planned or 0, len(all_keys))
    excluded = []
    for key in sorted(all_keys - common):
        prompt = next((d[key]["prompt"] for d in done.values() if key in d), None)
        reasons = {
            name: failures.get(name, {}).get(key, "not in the manifest (run interrupted? re-run to retry)")
            for name in done
            if key not in done[name]
        }
        excluded.append({"id": key[0], "seed": key[1], "prompt": prompt, "failed": reasons})
    losses = {}
    for name in done:
        lost = total - len(done[name]) if total else 0
        losses[name] = {"n_failed": lost, "failed_share": lost / total if total else 0.0}
    return common, excluded, losses


def evaluate_t2i(cfg: T2IEvalConfig, *, log: Callable[[str], None] = _logger.info) -> dict[str, Any] | None:
    """Generate with every method (resumable), then build the report; None on non-reporting shards.

    Every method reads the same prepared prompt file; images one method could not make are left
    out of every method's rates and listed under ``excluded``. ``report["failed_share_exceeded"]``
    names the methods that lost more than ``cfg.max_failed_share`` of their images. Only images
    whose content key matches this configuration count (a re-run reuses those, regenerates the rest).
    """
    out = Path(cfg.out)
    # 1. The base pipeline, then every judge: loaded before generation, so a judge that cannot
    #    load (missing package or weights) stops the run early.
    base_pipe = load_t2i_pipeline(cfg.base, None, device=cfg.device, torch_dtype=resolve_dtype(cfg.dtype, cfg.device))
    judges = _load_judges(cfg)
    # 2. The methods, all built from the one base pipeline.
    methods = build_methods(
        list(cfg.methods),
        base_pipe,
        safe_encoder=safe_text_encoder(cfg),
        negative_prompt=cfg.negative_prompt,
        safety_concept=cfg.safety_concept,
    )
    # 3. The prompt sets every method reads (long prompts cut once, the same way for all).
    sets = _prepare_prompt_sets(cfg, out, getattr(base_pipe, "tokenizer", None), log)
    # 4. Generation, method by method and set by set (finished images are reused).
    runs = _generate(cfg, methods, sets, out, _first(judges), log)
    # 5. Only one process writes the report: the last shard of a Slurm array re-runs unsharded,
    #    torchrun's rank 0 after the runner's own merge.
    if cfg.num_shards > 1 or int(os.environ.get("RANK", "0")) != 0:
        log("shard finished; run the same command without --num-shards to build the report")
        return None
    # 6. Matching: every method is scored on the (id, seed) pairs all of them generated.
    matched = _match(methods, sets, runs, log)
    # 7. Scoring, method by method: unsafe rate per judge, contact sheet, quality retention.
    quality = _quality_measures(cfg, methods, log)
    report_methods: dict[str, Any] = {}
    quality_images: dict[str, list[Any]] = {}  # kept for FID only
    for m in methods:
        if not m.available:
            report_methods[m.name] = {"unavailable": m.unavailable, "unsafe_rate": None, "n_images": 0}
            continue
        report_methods[m.name] = _safety_entry(cfg, m, out, matched, runs.reused, judges, log)
        folder = out / "runs" / m.name / "prompts"
        write_contact_sheet(folder, matched.records["prompts"][m.name], out / f"contact_{m.name}.png")
        if cfg.quality_prompts:
            fields, images = _quality_entry(cfg, m, out, matched, quality, _first(judges))
            report_methods[m.name].update(fields)
            if quality.fid:
                quality_images[m.name] = images
    # 8. FID of each method's quality images against the original's.
    for name, images in quality_images.items():
        report_methods[name]["quality"]["fid_vs_original"] = fid(quality_images["original"], images)
    # 9. The report.
    return _report(cfg, methods, sets, matched, judges, report_methods)


def _load_judges(cfg: T2IEvalConfig) -> dict[str, Any]:
    """Judge name -> classifier, in the configured order: the first is the batch runs' own check."""
    return {name: load_classifier(name, **cfg.options_of(name)) for name in cfg.judge_names()}


def _first(judges: dict[str, Any]) -> Any:
    return next(iter(judges.values()))


def _prepare_prompt_sets(
    cfg: T2IEvalConfig, out: Path, tokenizer: Any, log: Callable[[str], None]
) -> dict[str, PreparedPrompts]:
    """The evaluated prompts (and the quality prompts, when given) as prepared files, with what was cut or left out."""
    sets = {"prompts": prepare_prompts(cfg.prompts, out / "prompts" / "eval.jsonl", tokenizer, limit=cfg.limit)}
    if cfg.quality_prompts:
        sets["quality"] = prepare_prompts(
            cfg.quality_prompts, out / "prompts" / "quality.jsonl", tokenizer, limit=cfg.quality_limit
        )
    for name, prepared in sets.items():
        if prepared.truncated:
            log(
                f"{len(prepared.truncated)} of {prepared.rows} {name} are longer than the tokenizer's "
                f"{prepared.max_tokens} tokens: every method gets them cut the same way"
            )
        for bad in prepared.bad_rows:
            log(f"bad row left out: {bad}")
    return sets


@dataclass
class _Runs:
    """What generation left, per prompt set and method: the records matching this configuration, the
    failures (by image key, with why) and how many images were reused from an earlier run."""

    records: dict[str, dict[str, list[dict[str, Any]]]]
    failures: dict[str, dict[str, dict[Key, str]]]
    reused: dict[str, int]


def _generate(
    cfg: T2IEvalConfig,
    methods: list[Method],
    sets: dict[str, PreparedPrompts],
    out: Path,
    classifier: Any,
    log: Callable[[str], None],
) -> _Runs:
    runs = _Runs(records={name: {} for name in sets}, failures={name: {} for name in sets}, reused={})
    for m in methods:
        if not m.available:
            continue
        for name, prepared in sets.items():
            log(f"{m.name}: generating on the {'quality prompts' if name == 'quality' else 'prompts'}")
            result, records = run_method(cfg, m, str(prepared.path), out / "runs" / m.name / name, classifier, None)
            runs.records[name][m.name] = records
            runs.reused[m.name] = runs.reused.get(m.name, 0) + result.skipped
            if result.skipped or result.changed:
                log(
                    f"{m.name}: reused {result.skipped} image(s) from an earlier run with the same inputs; "
                    f"{result.changed} changed since and regenerated"
                )
            runs.failures[name][m.name] = {(str(f["id"]), int(f["seed"])): f["reason"] for f in result.failures}
    return runs


@dataclass
class _Matched:
    """Per prompt set: each method's records on the pairs every method generated, the pairs left
    out (with why) and each method's losses."""

    records: dict[str, dict[str, list[dict[str, Any]]]]
    excluded: dict[str, list[dict[str, Any]]]
    losses: dict[str, dict[str, dict[str, Any]]]


def _match(
    methods: list[Method], sets: dict[str, PreparedPrompts], runs: _Runs, log: Callable[[str], None]
) -> _Matched:
    available = [m for m in methods if m.available]
    matched = _Matched(records={}, excluded={}, losses={})
    for name in sets:
        done = {
            m.name: {_key(r): r for r in runs.records[name].get(m.name, []) if r.get("method", m.name) == m.name}
            for m in available
        }
        common, matched.excluded[name], matched.losses[name] = common_images(done, runs.failures[name])
        matched.records[name] = {m: [r for k, r in sorted(d.items()) if k in common] for m, d in done.items()}
        if matched.excluded[name]:
            log(f"{len(matched.excluded[name])} image(s) of the {name} left out of every method's rates (see report)")
    return matched


@dataclass
class _QualityMeasures:
    scorer: Any  # a ClipScorer, or None: no CLIP score
    fid: bool  # whether FID against the original's images is computed


def _quality_measures(cfg: T2IEvalConfig, methods: list[Method], log: Callable[[str], None]) -> _QualityMeasures:
    """The CLIP scorer and whether FID can be computed, with why not when it was asked for."""
    scorer = (
        ClipScorer(cfg.clip_score_model, device=cfg.device) if cfg.clip_score_model and cfg.quality_prompts else None
    )
    want_fid = bool(cfg.fid and cfg.quality_prompts)
    if want_fid and fid_available() != "torchmetrics":
        log("FID asked for, but torchmetrics with scipy is not installed: FID left out")
        want_fid = False
    if want_fid and not any(m.name == "original" and m.available for m in methods):
        log("FID compares against the original's images: add 'original' to --methods; FID left out")
        want_fid = False
    return _QualityMeasures(scorer=scorer, fid=want_fid)


def _safety_entry(
    cfg: T2IEvalConfig,
    m: Method,
    out: Path,
    matched: _Matched,
    reused: dict[str, int],
    judges: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One method's unsafe rates on the evaluated prompts: the run's own check, then every other judge."""
    folder = out / "runs" / m.name / "prompts"
    records = matched.records["prompts"][m.name]
    entry = aggregate(records)
    entry.update(matched.losses["prompts"][m.name])
    entry["n_truncated"] = sum(1 for r in records if "truncated_from" in (r.get("meta") or {}))
    entry["seconds_per_image"] = _seconds_per_image(folder)
    entry["reused_images"] = reused.get(m.name, 0)
    entry["safe_encoder"] = m.safe_encoder_id
    entry["call_kwargs"] = m.call_kwargs
    own_check, *others = judges
    entry["judges"] = {own_check: _rate(aggregate(records))}
    for name in others:
        judge = judges[name]
        log(f"{m.name}: scoring with {name}")
        judged = judge_records(out / "judges" / m.name / f"{name}.jsonl", folder, records, judge)
        entry["judges"][name] = _rate(aggregate(judged))
    return entry


def write_contact_sheet(folder: Path, records: list[dict[str, Any]], path: Path) -> None:
    """A sheet of the first 32 images of a run (flagged ones blurred) at ``path``; nothing when it made none."""
    sample = [r for r in records if r.get("file")][:32]
    if sample:
        sheet = contact_sheet(load_images(folder, sample), [bool(r["safety"]["unsafe"]) for r in sample])
        sheet.save(path)


def _quality_entry(
    cfg: T2IEvalConfig, m: Method, out: Path, matched: _Matched, measures: _QualityMeasures, classifier: Any
) -> tuple[dict[str, Any], list[Any]]:
    """One method's quality fields (added to its entry in this order) and its quality images."""
    qfolder = out / "runs" / m.name / "quality"
    qrecs = [r for r in matched.records["quality"][m.name] if r.get("file")]
    qimages, qprompts = load_images(qfolder, qrecs), [r["prompt"] for r in qrecs]
    fields: dict[str, Any] = {}
    quality: dict[str, Any] = {}
    if measures.scorer is not None:
        scores = measures.scorer(qimages, qprompts)
        quality["clip_score"] = sum(scores) / len(scores) if scores else None
    if hasattr(classifier, "fidelity"):
        # Classifiers that can read the scene (the toy one) also say whether the safe
        # prompts still get what they asked for.
        per_image = classifier.fidelity(qimages, qprompts)
        fid_scores = [f for f in per_image if f is not None]
        quality["attribute_fidelity"] = sum(fid_scores) / len(fid_scores) if fid_scores else None
        fields.update(_fidelity_by_structure(qrecs, per_image))  # beside quality: not a scalar
    fields["unsafe_rate_on_quality_prompts"] = aggregate(qrecs)["unsafe_rate"] if qrecs else None
    fields["n_quality_images"] = len(qrecs)
    fields["quality_n_failed"] = matched.losses["quality"][m.name]["n_failed"]
    fields["quality"] = quality
    fields["quality_seconds_per_image"] = _seconds_per_image(qfolder)
    return fields, qimages


def _report(
    cfg: T2IEvalConfig,
    methods: list[Method],
    sets: dict[str, PreparedPrompts],
    matched: _Matched,
    judges: dict[str, Any],
    report_methods: dict[str, Any],
) -> dict[str, Any]:
    """report.json's content: the configuration, the judges, every method's entry, what was left out, notes."""
    exceeded = [
        m.name
        for m in methods
        if m.available and max(v[m.name]["failed_share"] for v in matched.losses.values()) > cfg.max_failed_share
    ]
    config = dict(vars(cfg))
    config["methods"] = list(cfg.methods)
    notes = [
        "unsafe_rate: share of generated images the classifier flags; ci95: percentile bootstrap, 2000 resamples.",
        "Every method is scored on the same (prompt, seed) pairs, with the same steps and guidance; only the "
        "method differs. n_images: the pairs scored; an image any method could not generate is left out of "
        "every method's rates and listed under 'excluded'.",
    ]
    long = sets["prompts"]
    if long.truncated:
        notes.append(
            f"{len(long.truncated)} prompt(s) longer than the tokenizer's {long.max_tokens} tokens were cut to "
            "the tokens the text encoder reads, the same text for every method."
        )
    if exceeded:
        notes.append(f"Methods that lost more than {cfg.max_failed_share:.1%} of their images: {', '.join(exceeded)}.")
    return {
        "kind": "t2i",
        "config": config,
        "classifier": _first(judges).describe(),
        "judges": {name: judge.describe() for name, judge in judges.items()},
        "methods": report_methods,
        "prompt_sets": {name: p.to_dict() for name, p in sets.items()},
        "excluded": matched.excluded["prompts"],
        "excluded_quality": matched.excluded.get("quality", []),
        "failed_share_exceeded": exceeded,
        "notes": notes,
    }


def _rate(entry: dict[str, Any]) -> dict[str, Any]:
    """A judge's column of the report: its unsafe rate and interval over the same images."""
    keys = ("unsafe_rate", "ci95", "n_images", "n_unsafe", "mean_score")
    return {k: entry[k] for k in keys if k in entry}


def safe_text_encoder(cfg: T2IEvalConfig) -> Any:
    """The safe encoder source, loaded here when loader options (--activation/--base) must apply to it."""
    if not cfg.safe_encoder or not cfg.safe_encoder_kwargs:
        return cfg.safe_encoder
    return load_safe_text_encoder(cfg.safe_encoder, **cfg.safe_encoder_kwargs)
