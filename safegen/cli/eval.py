"""`safegen eval`: safety and quality of a setup against baselines, one command per modality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from safegen.cli._common import (
    Command,
    check_output_folder,
    claim_output_folder,
    cli_errors,
    clip_text,
    console,
    echo_plain,
    encoder_kwargs,
    output_folder,
    parse_size,
    print_json,
    resolve_device,
    resolve_dtype,
    status,
)
from safegen.cli.options import (
    ActivationOpt,
    BaseOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    OutOpt,
    PresetOpt,
    SafeEncoderOpt,
    SizeOpt,
    batch_size_option,
    caption_prompt_option,
    captioner_option,
    classifier_option,
    guidance_option,
    limit_option,
    max_new_tokens_option,
    methods_option,
    negative_prompt_option,
    num_shards_option,
    processor_option,
    prompts_option,
    safe_vision_encoder_option,
    safety_concept_option,
    seed_option,
    shard_index_option,
    steps_option,
    temperature_option,
)
from safegen.core.errors import UsageError

if TYPE_CHECKING:
    from safegen.evaluation.choices import PresetDefaults

app = typer.Typer(
    help="Measure safety and quality: original vs Safe-CLIP vs baselines.", no_args_is_help=True, rich_markup_mode=None
)

CompareOpt = Annotated[
    Path | None, typer.Option("--compare-to", help="An earlier report.json: print the deltas.", exists=True)
]

# ----------------------------------------------------------------------------- eval t2i's own options
T2IPromptsOpt = Annotated[
    Path, prompts_option("Prompt file (I2P/research CSV, txt, jsonl) or a shipped set: i2p, coco.")
]
T2IMethodsOpt = Annotated[
    str,
    methods_option(
        "Comma-separated: original, safe-clip, negative-prompt, sld-weak|medium|strong|max, and "
        "combinations joined by '+' (safe-clip+sld-medium)."
    ),
]
T2IClassifierOpt = Annotated[
    str | None,
    classifier_option(
        "Output classifier: nudenet (nudity), q16 (any inappropriate content, CLIP), i2p (q16 or "
        "nudenet: the I2P benchmark's rule), toy, or a judge name (see --judges); default: the preset's, "
        "else nudenet."
    ),
]
JudgesOpt = Annotated[
    str | None,
    typer.Option(
        "--judges",
        help="Comma-separated judges scoring the same images, one report column each (the first is the run's "
        "own check): nudenet-v3-0.45-exposed9, nudenet-v3-0.2-exposed9, nudenet-v3-0.6-exposed9, "
        "nudenet-v3-0.75-exposed9, nudenet-v3-0.6-i2p5, q16-vit-l14, i2p-q16-or-nudenet, opennsfw-0.5, "
        "or any --classifier name.",
    ),
]
Q16ClipOpt = Annotated[
    str | None,
    typer.Option("--q16-clip", help="CLIP for q16/i2p (default: openai/clip-vit-large-patch14, Q16's ViT-L/14)."),
]
Q16PromptsOpt = Annotated[
    Path | None,
    typer.Option("--q16-prompts", exists=True, help="Learned Q16 class embeddings (.safetensors, 'prompts' (2, D))."),
]
T2INegativePromptOpt = Annotated[
    str | None, negative_prompt_option("The negative-prompt method's text (default: SLD's concept).")
]
T2ISafetyConceptOpt = Annotated[
    str | None, safety_concept_option("SLD's safety concept (default: the preset's, else SLD's).")
]
QualityPromptsOpt = Annotated[
    Path | None,
    typer.Option("--quality-prompts", help="Safe prompts for quality retention: a file or the shipped set coco."),
]
ClipScoreModelOpt = Annotated[
    str | None, typer.Option("--clip-score-model", help="CLIP for the CLIP score (default: the preset's clip).")
]
FidOpt = Annotated[bool, typer.Option("--fid", help="FID against the original's images (needs torchmetrics).")]
MaxFailedShareOpt = Annotated[
    float,
    typer.Option(
        "--max-failed-share",
        min=0.0,
        max=1.0,
        help="Exit 1 when a method could not generate more than this share of its images "
        "(they are left out of every method's rates either way).",
    ),
]

# ----------------------------------------------------------------------------- eval i2t's own options
LabelsOpt = Annotated[
    Path | None, typer.Option("--labels", exists=True, help='JSONL {"image", "categories"}: per-category rates.')
]
TextClassifierOpt = Annotated[
    str, typer.Option("--text-classifier", help="'wordlist' (default) or a transformers text-classification id.")
]
UnsafeLabelsOpt = Annotated[
    str, typer.Option("--unsafe-labels", help="Comma-separated labels that count as unsafe (HF classifier).")
]

# ----------------------------------------------------------------------------- eval retrieval's own options
ClipOpt = Annotated[str | None, typer.Option("--clip", help="The original CLIP (folder or hub id).")]
SafeOpt = Annotated[
    str | None,
    typer.Option("--safe", help="The Safe-CLIP: folder, hub id, export (--what model|text|vision), checkpoint."),
]

# ----------------------------------------------------------------------------- eval attack's own options
AttackPromptsOpt = Annotated[
    Path,
    prompts_option(
        "Unsafe prompts: jsonl with optional safe_prompt and concept keys, txt, I2P CSV (categories), "
        "or the shipped set i2p."
    ),
]
AttackMethodsOpt = Annotated[
    str, methods_option("Comma-separated, as for eval t2i (original, safe-clip, sld-*, ...).")
]
AttacksOpt = Annotated[
    str,
    typer.Option(
        "--attacks",
        "--attack",
        help="Comma-separated: paraphrase, ring-a-bell, adaptive; unlearndiff, p4d (white box, on the UNet's "
        "denoising loss) and structure (keeps the unsafe words, searches sentence shapes) run when named.",
    ),
]
BudgetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--budget",
        help="ATTACK=N queries per prompt (repeatable); defaults paraphrase=32, structure=32, unlearndiff=8 and "
        "p4d=8 generations, ring-a-bell=4096 and adaptive=2048 text-encoder passes.",
    ),
]
AttackOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--attack-option",
        help="ATTACK.KNOB=VALUE (repeatable): adaptive.length=8, adaptive.restarts=2, ring-a-bell.eta=2, "
        "unlearndiff.steps_per_query=20, p4d.lr=0.02, ...",
    ),
]
ConceptOpt = Annotated[
    str | None, typer.Option("--concept", help="Concept of rows without a concept/categories column.")
]
BannedWordsOpt = Annotated[
    str | None,
    typer.Option("--banned-words", help='Extra banned words: a JSON file {"concept": [words]} or concept=w1,w2;...'),
]
StrictWordsOpt = Annotated[
    bool, typer.Option("--strict", help="Also refuse banned words spelt across spaces or punctuation.")
]
SynonymsOpt = Annotated[
    Path | None, typer.Option("--synonyms", exists=True, help="JSON word -> [rewrites] for paraphrase.")
]
TargetImagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--target-images",
        exists=True,
        file_okay=False,
        help="unlearndiff/p4d target images, <id>.png per prompt; default: the original model's image.",
    ),
]
ShapesOpt = Annotated[
    str | None,
    typer.Option(
        "--shapes",
        help="structure's sentence-shape vocabulary: toy, generic or a JSON file; default: the preset's "
        "(toy for --preset toy), else generic.",
    ),
]
AttackClassifierOpt = Annotated[
    str | None, classifier_option("Output classifier (nudenet, toy); default: the preset's.")
]
AttackImagesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--images", help="Unsafe images (files/folders, repeatable) for image-pgd against the captioner's tower."
    ),
]
AttackCaptionerOpt = Annotated[
    str | None, captioner_option("LLaVA-style captioner for --images (default: the preset's).")
]
AttackSafeVisionOpt = Annotated[str | None, safe_vision_encoder_option("Safe vision tower (default: the preset's).")]
PgdEpsOpt = Annotated[float, typer.Option("--pgd-eps", help="L-infinity bound, pixels in [0, 1].")]
PgdStepsOpt = Annotated[int, typer.Option("--pgd-steps", min=1, help="PGD steps per image.")]


def _load_compare(compare_to: Path | None, key: str = "methods") -> dict | None:
    """The earlier report to compare with, read before any work (a bad file must not cost a whole run)."""
    if compare_to is None:
        return None
    try:
        previous = json.loads(compare_to.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = clip_text(str(exc), 120)
        raise UsageError(f"--compare-to {compare_to}: not a readable report.json ({why})") from None
    if not isinstance(previous, dict) or not isinstance(previous.get(key), dict):
        raise UsageError(f"--compare-to {compare_to}: not a safegen report.json of this command (no '{key}' object)")
    return previous


# The flag that sets each evaluation config field, where it is not the field's name with dashes (--batch-size).
FLAGS = {"width": "--size", "height": "--size", "budgets": "--budget", "attack_options": "--attack-option"}


def _config(cls: type, **fields: Any) -> Any:
    """``cls(**fields)``: the evaluation config, the one check of the options; its errors name the flag."""
    from safegen.evaluation.t2i_eval import EvalConfigError

    try:
        return cls(**fields)
    except EvalConfigError as exc:
        flag = FLAGS.get(exc.field, "--" + exc.field.replace("_", "-"))
        raise UsageError(f"{flag} {exc.reason}") from None


def _finish(report: dict, out: Path, previous: dict | None, json_out: bool, *, attack: bool = False) -> None:
    """Write the report (eval attack's has its own files), print it (markdown, or JSON with --json), then its
    deltas to ``previous`` (--compare-to, read before the run: it may be the report.json this run overwrites)."""
    from safegen.evaluation.report import compare_reports, format_comparison, markdown_report, write_report

    write, markdown = write_report, markdown_report
    if attack:
        from safegen.evaluation.attacks import markdown_attack_report, write_attack_report

        write, markdown = write_attack_report, markdown_attack_report
    paths = write(out, report)
    err = console()
    err.print(f"report: {paths['json']}")
    if json_out:
        print_json(report)
    else:
        typer.echo(markdown(report))
    if previous is not None:
        typer.echo(format_comparison(compare_reports(report, previous)))


def _shared_fields(
    command: str,
    prompts: Path,
    out: Path,
    size: str | None,
    device: str,
    sources: tuple[str | None, str | None, str | None],
    encoder: tuple[str | None, str | None],
) -> tuple[dict[str, Any], PresetDefaults]:
    """The fields `eval t2i` and `eval attack` fill alike, from what needs no model (a bad flag or file must
    not cost a whole run): the prompt file, the output folder, the models (``sources``: --preset, --model,
    --safe-encoder; ``encoder``: --activation, --base), the image size and the device; and what the preset
    adds (:class:`~safegen.evaluation.choices.PresetDefaults`: the toy world names its classifier, safety
    concept and sentence shapes)."""
    from safegen.data.prompt_sets import resolve_prompt_file
    from safegen.evaluation.choices import preset_defaults
    from safegen.pipelines.loading import resolve_t2i_sources

    preset, model, safe_encoder = sources
    width, height = parse_size(size)
    check_output_folder(out, command)
    models = resolve_t2i_sources(preset, model, safe_encoder)
    fields = {
        "prompts": str(resolve_prompt_file(prompts, "--prompts")),
        "out": str(out),
        "base": models.base,
        "safe_encoder": models.safe_encoder,
        "safe_encoder_kwargs": encoder_kwargs(*encoder),
        "width": width,
        "height": height,
        "device": resolve_device(device),
    }
    return fields, preset_defaults(preset)


@app.command("t2i", cls=Command)
@cli_errors
def eval_t2i(
    prompts: T2IPromptsOpt,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    methods: T2IMethodsOpt = "original,safe-clip,negative-prompt,sld-medium,safe-clip+sld-medium",
    classifier: T2IClassifierOpt = None,
    judges: JudgesOpt = None,
    q16_clip: Q16ClipOpt = None,
    q16_prompts: Q16PromptsOpt = None,
    steps: Annotated[int, steps_option(None)] = 30,
    guidance: Annotated[float, guidance_option("For rows without their own.")] = 7.5,
    size: SizeOpt = None,
    seed: Annotated[int, seed_option("For rows without their own seed.", short=False)] = 0,
    batch_size: Annotated[int, batch_size_option()] = 4,
    limit: Annotated[int | None, limit_option("First N prompts only.")] = None,
    negative_prompt: T2INegativePromptOpt = None,
    safety_concept: T2ISafetyConceptOpt = None,
    quality_prompts: QualityPromptsOpt = None,
    quality_limit: Annotated[int | None, typer.Option("--quality-limit", min=1)] = None,
    clip_score_model: ClipScoreModelOpt = None,
    fid: FidOpt = False,
    num_shards: Annotated[int, num_shards_option()] = 1,
    shard_index: Annotated[int, shard_index_option()] = 0,
    max_failed_share: MaxFailedShareOpt = 0.01,
    out: OutOpt = Path("outputs/eval_t2i"),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    compare_to: CompareOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate with every method on the same prompts and seeds; unsafe rate, quality and time per method."""
    from safegen.data.prompt_sets import resolve_prompt_file
    from safegen.evaluation.t2i_eval import T2IEvalConfig, evaluate_t2i

    # 1. What needs no model is checked first: a bad flag or file must not cost a whole run.
    previous = _load_compare(compare_to)
    shared, defaults = _shared_fields(
        "safegen eval t2i", prompts, out, size, device, (preset, model, safe_encoder), (activation, base)
    )
    # 2. The judges: --judges, else --classifier, else the preset's classifier.
    classifier, judge_names, judge_options = _judges(
        judges, classifier, defaults.classifier, shared["device"], q16_clip, q16_prompts
    )
    # 3. The config (it checks the rest) and the run.
    cfg = _config(
        T2IEvalConfig,
        **shared,
        methods=_names(methods),
        classifier=classifier,
        classifier_options=judge_options[classifier],
        judges=judge_names,
        judge_options=judge_options if judge_names else {},
        steps=steps,
        guidance=guidance,
        seed=seed,
        batch_size=batch_size,
        limit=limit,
        negative_prompt=negative_prompt or defaults.safety_concept,
        safety_concept=safety_concept or defaults.safety_concept,
        quality_prompts=str(resolve_prompt_file(quality_prompts, "--quality-prompts")) if quality_prompts else None,
        quality_limit=quality_limit,
        clip_score_model=clip_score_model or defaults.clip,
        fid=fid,
        dtype=dtype,
        num_shards=num_shards,
        shard_index=shard_index,
        max_failed_share=max_failed_share,
    )
    err = console()
    with output_folder(out, "safegen eval t2i"):
        report = evaluate_t2i(cfg, log=lambda message: echo_plain(err, message))
    # 4. The report (None: a shard's part, merged by the last shard), and exit 1 when a method failed too often.
    if report is not None:
        _finish(report, out, previous, json_out)
        _exit_if_failed_too_often(report, out, max_failed_share)


def _exit_if_failed_too_often(report: dict, out: Path, max_failed_share: float) -> None:
    if report["failed_share_exceeded"]:
        console().print(
            f"error: {', '.join(report['failed_share_exceeded'])} could not generate more than "
            f"{max_failed_share:.1%} of the images (listed under 'excluded' in {out / 'report.json'}); "
            "fix the cause and re-run to retry them, or raise --max-failed-share"
        )
        raise typer.Exit(1)


def _names(value: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (--methods, --attacks, --judges)."""
    return [n.strip() for n in value.split(",") if n.strip()]


def _judges(
    judges: str | None,
    classifier: str | None,
    preset_classifier: str,
    device: str,
    q16_clip: str | None,
    q16_prompts: Path | None,
) -> tuple[str, list[str], dict[str, dict]]:
    """The run's own check, the --judges (the config checks their names) and every judge's runtime options."""
    from safegen.evaluation.choices import judge_options

    if judges and classifier:
        raise typer.BadParameter("give --judges or --classifier, not both (--classifier X is --judges X)")
    judge_names = _names(judges) if judges else []
    if judges and not judge_names:  # the config reads no judges as [classifier]: say so here
        raise UsageError("--judges is empty: name at least one judge")
    classifier = judge_names[0] if judge_names else classifier or preset_classifier
    options = {name: judge_options(name, device, q16_clip, q16_prompts) for name in judge_names or [classifier]}
    if (q16_clip or q16_prompts) and not any("clip" in o or "prompts" in o for o in options.values()):
        raise typer.BadParameter("--q16-clip/--q16-prompts need a q16 or i2p classifier or judge")
    return classifier, judge_names, options


@app.command("i2t", cls=Command)
@cli_errors
def eval_i2t(
    images: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    labels: LabelsOpt = None,
    text_classifier: TextClassifierOpt = "wordlist",
    unsafe_labels: UnsafeLabelsOpt = "toxic,nsfw,unsafe",
    prompt: Annotated[str, caption_prompt_option()] = "Describe this image.",
    temperature: Annotated[float, temperature_option("0 = greedy.")] = 0.2,
    max_new_tokens: Annotated[int, max_new_tokens_option()] = 128,
    batch_size: Annotated[int, batch_size_option()] = 8,
    seed: Annotated[int, seed_option(None, short=False)] = 0,
    out: OutOpt = Path("outputs/eval_i2t"),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    compare_to: CompareOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Caption IMAGES with the original and the safe vision tower; rate unsafe captions."""
    from safegen.core.terminal import job_progress
    from safegen.data.image_io import expand_image_args
    from safegen.evaluation.i2t_eval import evaluate_captions, read_labels
    from safegen.evaluation.text_safety import load_text_classifier
    from safegen.pipelines.image_to_text import SafeLlavaCaptioner
    from safegen.pipelines.loading import resolve_i2t_sources

    # 1. The output folder, the earlier report, the models' sources and the images, before any model loads.
    check_output_folder(out, "safegen eval i2t")
    previous = _load_compare(compare_to)
    sources = resolve_i2t_sources(preset, model, safe_encoder)
    if sources.safe_encoder is None:
        raise typer.BadParameter("eval needs a safe encoder (from --preset or --safe-encoder)")
    expanded = expand_image_args(images)
    files = list(expanded.paths)
    for problem in expanded.problems:
        console().print(f"skipped: {problem}")
    if not files:
        raise typer.BadParameter("no images found in the given paths", param_hint="IMAGES")
    # 2. The caption classifier, the captioner (keeping its original tower) and the safe tower.
    dev = resolve_device(device)
    classifier = load_text_classifier(text_classifier, unsafe_labels.split(","), device=dev)
    err = console()
    with status(err, f"loading {sources.base}"):
        captioner = SafeLlavaCaptioner.from_pretrained(
            sources.base, device=dev, torch_dtype=resolve_dtype(dtype, dev), keep_original=True
        )
    safe_vision = _safe_vision(sources.safe_encoder, encoder_kwargs(activation, base))
    # 3. Caption with both towers and rate the captions.
    gen = dict(prompt=prompt, temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    with output_folder(out, "safegen eval i2t"), job_progress("captioning") as bar:
        report = evaluate_captions(
            files,
            captioner,
            safe_vision,
            classifier,
            labels=read_labels(labels) if labels else None,
            caption_kwargs=gen,
            out=out,
            progress=lambda m, d, t: (bar.describe(f"captioning ({m})"), bar.update(d, t)),
        )
    # 4. The report, with what was run.
    report["config"] = {
        "captioner": sources.base,
        "safe_encoder": sources.safe_encoder,
        "images": len(files),
        "prompt": prompt,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "image_fit": captioner.image_fit,
    }
    _finish(report, out, previous, json_out)


def _safe_vision(source: str, enc_kwargs: dict) -> Any:
    """The safe tower's source, or with --activation/--base the tower loaded here so they apply
    (the report still names the source)."""
    if not enc_kwargs:
        return source
    from safegen.models.encoders import load_safe_vision_encoder

    return load_safe_vision_encoder(source, **enc_kwargs)


@app.command("retrieval", cls=Command)
@cli_errors
def eval_retrieval(
    data: Annotated[
        Path, typer.Argument(help="JSONL quadruples {safe_text, unsafe_text, safe_image?, unsafe_image?}.")
    ],
    preset: PresetOpt = None,
    clip: ClipOpt = None,
    safe: SafeOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    processor: Annotated[
        str | None, processor_option("Processor source for checkpoints that ship weights only.")
    ] = None,
    limit: Annotated[int | None, limit_option("Use the first N records.")] = None,
    out: OutOpt = Path("outputs/eval_retrieval"),
    device: DeviceOpt = "auto",
    compare_to: CompareOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The paper's retrieval table, original vs safe, and how often unsafe items win top-1."""
    from safegen.core.io import atomic_write_json
    from safegen.evaluation.retrieval_eval import evaluate_retrieval, format_retrieval_report, read_quadruples
    from safegen.models.presets import get_preset
    from safegen.retrieval.retriever import SafeRetriever
    from safegen.retrieval.sources import open_retriever

    if preset:
        p = get_preset(preset)
        clip = clip or p.clip
        safe = safe or p.safe_encoder
    if not clip or not safe:
        raise typer.BadParameter("give --clip and --safe (or a --preset that names both, e.g. toy)")
    check_output_folder(out, "safegen eval retrieval")
    prev = _load_compare(compare_to, key="redirection")
    rows = read_quadruples(data, limit=limit)
    dev = resolve_device(device)
    with status(console(), "embedding"):
        original = SafeRetriever.from_pretrained(clip, processor=processor, device=dev)
        safe_r = open_retriever(
            safe, original=clip, processor=processor, encoder_kwargs=encoder_kwargs(activation, base), device=dev
        )
        report = evaluate_retrieval(rows, original, safe_r)
    report["config"] = {"clip": clip, "safe": safe, "data": str(data), "n": len(rows)}
    claim_output_folder(out, "safegen eval retrieval")
    atomic_write_json(out / "report.json", report)
    if json_out:
        print_json(report)
    else:
        typer.echo(format_retrieval_report(report))
    if prev is not None:
        for name, red in report["redirection"].items():
            for key, value in red.items():
                old = prev.get("redirection", {}).get(name, {}).get(key)
                if old is not None:
                    typer.echo(f"{name} {key}: {value:.1f} (was {old:.1f}, {value - old:+.1f})")


def _parse_budgets(items: list[str] | None) -> dict[str, int]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise typer.BadParameter(f"'{item}' must look like ATTACK=N (e.g. adaptive=1024)", param_hint="--budget")
        out[name.strip()] = int(value)
    return out


def _parse_attack_options(items: list[str] | None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        attack, dot, knob = key.partition(".")
        if not sep or not dot or not knob:
            raise typer.BadParameter(
                f"'{item}' must look like ATTACK.KNOB=VALUE (adaptive.length=8)", param_hint="--attack-option"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(attack.strip(), {})[knob.strip()] = value
    return out


@app.command("attack", cls=Command)
@cli_errors
def eval_attack(
    prompts: AttackPromptsOpt,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    methods: AttackMethodsOpt = "original,safe-clip,negative-prompt",
    attacks: AttacksOpt = "paraphrase,ring-a-bell,adaptive",
    budget: BudgetOpt = None,
    attack_option: AttackOptionOpt = None,
    concept: ConceptOpt = None,
    banned_words: BannedWordsOpt = None,
    strict: StrictWordsOpt = False,
    synonyms: SynonymsOpt = None,
    target_images: TargetImagesOpt = None,
    shapes: ShapesOpt = None,
    classifier: AttackClassifierOpt = None,
    steps: Annotated[int, steps_option(None)] = 30,
    guidance: Annotated[float, guidance_option(None)] = 7.5,
    size: SizeOpt = None,
    seed: Annotated[int, seed_option("Attack seed; generation seed of rows without one.", short=False)] = 0,
    batch_size: Annotated[int, batch_size_option()] = 4,
    limit: Annotated[int | None, limit_option("First N prompts (and --images) only.")] = None,
    negative_prompt: Annotated[str | None, negative_prompt_option(None)] = None,
    safety_concept: Annotated[str | None, safety_concept_option()] = None,
    images: AttackImagesOpt = None,
    captioner: AttackCaptionerOpt = None,
    safe_vision_encoder: AttackSafeVisionOpt = None,
    pgd_eps: PgdEpsOpt = 8 / 255,
    pgd_steps: PgdStepsOpt = 20,
    out: OutOpt = Path("outputs/eval_attack"),
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    compare_to: CompareOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Attack every method with prompts that hold no banned word; attack success rate, queries and examples."""
    from safegen.evaluation.attacks import AttackEvalConfig, evaluate_attacks

    # 1. What needs no model is checked first, as in `eval t2i`.
    previous = _load_compare(compare_to)
    shared, defaults = _shared_fields(
        "safegen eval attack", prompts, out, size, device, (preset, model, safe_encoder), (activation, base)
    )
    # 2. The config (it checks the attacks, budgets and the rest) and the run.
    cfg = _config(
        AttackEvalConfig,
        **shared,
        methods=_names(methods),
        attacks=_names(attacks),
        budgets=_parse_budgets(budget),
        attack_options=_parse_attack_options(attack_option),
        concept=concept,
        banned_words=banned_words,
        strict=strict,
        synonyms=str(synonyms) if synonyms else None,
        target_images=str(target_images) if target_images else None,
        shapes=shapes or defaults.attack_shapes,
        classifier=classifier or defaults.classifier,
        steps=steps,
        guidance=guidance,
        seed=seed,
        batch_size=batch_size,
        limit=limit,
        negative_prompt=negative_prompt or defaults.safety_concept,
        safety_concept=safety_concept or defaults.safety_concept,
        dtype=dtype,
        images=list(images or []),
        captioner=captioner or defaults.captioner,
        safe_vision_encoder=safe_vision_encoder or defaults.safe_vision_encoder,
        pgd_eps=pgd_eps,
        pgd_steps=pgd_steps,
    )
    with output_folder(out, "safegen eval attack"):
        report = evaluate_attacks(cfg, log=console().print)
    # 3. The report: written, printed, compared with the earlier one.
    _finish(report, out, previous, json_out, attack=True)
