"""`safegen i2t`: caption images with a LLaVA-family model through a Safe-CLIP vision tower.

Captions go to stdout (text, or JSON lines with --json). With ``--out DIR`` (a folder, as
for every other command) they go to ``DIR/captions.jsonl`` instead, a line per image and
variant written as each batch finishes, keyed by a hash of the image bytes, the prompt, the
generation settings and the weight fingerprints: re-running the command reuses captions
whose key matches and re-captions the rest (changed images or settings are reported). One
process per DIR. Progress and per-file problems go to stderr. Exit 0 when every image was
captioned, 1 when any file could not be read or the run failed, 2 for usage errors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from safegen.cli._common import (
    check_device,
    check_number,
    check_output_folder,
    check_seed,
    claim_output_folder,
    cli_errors,
    console,
    echo_plain,
    encoder_kwargs,
    resolve_device,
    resolve_dtype,
)
from safegen.cli.options import (
    ActivationOpt,
    BaseOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    PresetOpt,
    SafeEncoderOpt,
    batch_size_option,
    caption_prompt_option,
    compare_option,
    max_new_tokens_option,
    out_option,
    recursive_option,
    seed_option,
    temperature_option,
)
from safegen.core.errors import UsageError
from safegen.core.seeds import resolve_seed
from safegen.core.terminal import hide_loading_bars
from safegen.pipelines.loading import Sources, resolve_i2t_sources

_logger = logging.getLogger(__name__)


CAPTIONS = "captions.jsonl"
RUN_JSON = "run.json"
I2T_COMMAND = "safegen i2t"  # what the output marker of a captions folder names


@cli_errors
def i2t(
    images: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns ('photos/*.jpg').")],
    preset: PresetOpt = None,
    model: ModelOpt = None,
    safe_encoder: SafeEncoderOpt = None,
    activation: ActivationOpt = None,
    base: BaseOpt = None,
    prompt: Annotated[str, caption_prompt_option("Instruction given with each image.")] = "Describe this image.",
    temperature: Annotated[
        float, temperature_option("Sampling temperature; 0 decodes greedily.", short=True, minimum=0.0)
    ] = 0.2,
    max_new_tokens: Annotated[int, max_new_tokens_option("Caption length limit.", maximum=4096)] = 128,
    batch_size: Annotated[int, batch_size_option("Images per generate call.", short=True)] = 8,
    seed: Annotated[int, seed_option("Sampling seed; -1 picks one (always recorded).")] = -1,
    recursive: Annotated[bool, recursive_option("Also read images in sub-folders.")] = False,
    compare: Annotated[bool, compare_option("Caption with the original and the safe tower, side by side.")] = False,
    json_out: JsonOpt = False,
    out: Annotated[
        Path | None, out_option("Output folder: captions.jsonl (resumable, a line per image) and run.json.")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    image_fit: Annotated[
        str,
        typer.Option(
            "--image-fit", help="pad (original LLaVA-1.5), crop (llava-hf's centre crop) or auto (pad for LLaVA)."
        ),
    ] = "auto",
) -> None:
    """Caption images; with a safe encoder, unsafe content should be left out of the caption."""
    from safegen.data.image_io import expand_image_args

    # Options and the output folder are checked before any image is read or model loaded.
    check_seed(seed)
    check_number(temperature, "--temperature")
    check_device(device)
    if out is not None:
        check_output_folder(out, I2T_COMMAND)
    sources = resolve_i2t_sources(preset, model, safe_encoder)
    enc_kwargs = encoder_kwargs(activation, base)
    if compare and sources.safe_encoder is None:
        raise typer.BadParameter(
            "--compare needs a safe encoder (from --preset or --safe-encoder)", param_hint="--compare"
        )
    expanded = expand_image_args(images, recursive=recursive)
    err = console()
    if not expanded.paths:
        # Nothing to caption: the problems are the error, said once (not each, then a usage block about them).
        raise UsageError(f"no image files found: {'; '.join(expanded.problems) or 'the arguments name none'}")
    for problem in expanded.problems:
        _report(problem)

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    lock = None
    if out is not None:
        from safegen.core.locking import FolderLock

        lock = FolderLock(out, purpose="i2t output folder").acquire()
    try:
        if out is not None:  # claimed under the lock, which removes the marker again if nothing is written
            claim_output_folder(out, I2T_COMMAND)
        if seed < 0:
            seed = _previous_seed(out) if out is not None else None
            seed = resolve_seed(seed)
        records, failed, stats = _run(
            expanded.paths,
            sources,
            compare=compare,
            device=dev,
            torch_dtype=torch_dtype,
            gen=dict(prompt=prompt, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
            batch_size=batch_size,
            err=err,
            out=out,
            enc_kwargs=enc_kwargs,
            image_fit=image_fit,
        )
    finally:
        if lock is not None:
            lock.release()
    _emit(records, compare=compare, json_out=json_out, out=out, err=err, stats=stats)
    n_bad = failed + len(expanded.problems)
    if n_bad:
        echo_plain(err, f"{len(records) - failed} image(s) captioned, {n_bad} problem(s) reported above")
        raise typer.Exit(1)


def _previous_seed(out: Path) -> int | None:
    """The seed a resumed run used (so a random seed picked once keeps its captions reusable)."""
    try:
        seed = json.loads((out / RUN_JSON).read_text(encoding="utf-8"))["gen"]["seed"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return seed if isinstance(seed, int) and 0 <= seed < 2**63 else None


def _image_sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def _run(
    paths: list[Path],
    sources: Sources,
    *,
    compare: bool,
    device: str,
    torch_dtype: Any,
    gen: dict[str, Any],
    batch_size: int,
    err: Any,
    out: Path | None = None,
    enc_kwargs: dict[str, Any] | None = None,
    image_fit: str = "auto",
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """Caption every readable file (twice with --compare) and build one record per path, in order.

    Images are read one batch at a time, so a folder of thousands never sits decoded in
    memory; with --compare the second pass reads the files again after the tower swap. With
    ``out``, each batch's captions are appended to ``out/captions.jsonl`` as soon as they
    exist, and captions already there with the same key are reused.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from safegen.core.fingerprint import fingerprint_source
    from safegen.data.image_io import iter_images
    from safegen.jobs.manifest import ManifestWriter, read_jsonl
    from safegen.jobs.plan import content_key
    from safegen.pipelines.image_to_text import SafeLlavaCaptioner

    bad: dict[str, str] = {}
    stats = {"captioned": 0, "reused": 0, "changed": 0}
    passes = ["original", "safe"] if compare else ["caption"]
    base_fp, safe_fp = fingerprint_source(sources.base), fingerprint_source(sources.safe_encoder)
    digests = {str(p): _image_sha256(p) for p in paths}

    def key_of(path: str, name: str) -> str:
        tower = None if name == "original" else safe_fp
        context = {"model": base_fp, "safe_encoder": tower, "image_fit": image_fit}
        if tower is not None and enc_kwargs:
            context["encoder_kwargs"] = enc_kwargs  # the same files read another way are another tower
        return content_key({"image_sha256": digests[path], "variant": name, **gen}, context)

    previous: dict[tuple[str, str], dict[str, Any]] = {}
    if out is not None:
        for rec in read_jsonl(out / CAPTIONS)[0]:
            if rec.get("content_key") and isinstance(rec.get("image"), str):
                previous[(rec["image"], str(rec.get("variant")))] = rec
    captions: dict[str, dict[str, str]] = {name: {} for name in passes}
    todo: dict[str, list[Path]] = {}
    for name in passes:
        todo[name] = []
        for p in paths:
            rec = previous.get((str(p), name))
            if rec is not None and rec["content_key"] == key_of(str(p), name):
                captions[name][str(p)] = rec.get("caption")
                stats["reused"] += 1
                continue
            stats["changed"] += int(rec is not None)
            todo[name].append(p)

    def batches(todo_paths: list[Path]):
        for start in range(0, len(todo_paths), batch_size):
            batch = []
            for path, image, error in iter_images(todo_paths[start : start + batch_size]):
                if error is None:
                    batch.append((path, image))
                elif str(path) not in bad:
                    _report(str(error))
                    bad[str(path)] = error.reason
            yield batch

    common = {"model": sources.base, "safe_encoder": sources.safe_encoder, "preset": sources.preset, **gen}
    common["image_fit"] = image_fit
    writer = None

    def start_output() -> Any:
        """run.json and the captions file, written once a model is loaded (a failed load leaves no files)."""
        from safegen.core.io import atomic_write_json

        atomic_write_json(
            out / RUN_JSON,
            {
                "images": len(paths),
                "model": sources.base,
                "safe_encoder": sources.safe_encoder,
                "preset": sources.preset,
                "compare": compare,
                "gen": gen,
                "fingerprints": {"model": base_fp, "safe_encoder": safe_fp},
            },
        )
        return ManifestWriter(out / CAPTIONS)

    try:
        if any(todo.values()):
            echo_plain(err, f"loading {sources.base} ...")
            hide_loading_bars()
            captioner = SafeLlavaCaptioner.from_pretrained(
                sources.base,
                safe_encoder=None if compare else sources.safe_encoder,
                safe_encoder_kwargs=enc_kwargs,
                device=device,
                torch_dtype=torch_dtype,
                keep_original=False,
                image_fit=image_fit,
            )
            # pad or crop: changes what the tower sees of non-square images
            common["image_fit"] = captioner.image_fit
            if out is not None:
                writer = start_output()
            with Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=True,
            ) as progress:
                for name in passes:
                    if name == "safe":
                        captioner.set_safe_encoder(sources.safe_encoder, keep_original=False, **(enc_kwargs or {}))
                    task = progress.add_task(f"captioning ({name})", total=len(todo[name]))
                    for batch in batches(todo[name]):
                        texts = (
                            captioner.caption(
                                [im for _, im in batch],
                                gen["prompt"],
                                temperature=gen["temperature"],
                                max_new_tokens=gen["max_new_tokens"],
                                batch_size=batch_size,
                                seed=gen["seed"],
                            )
                            if batch
                            else []
                        )
                        done = [(str(p), t) for (p, _), t in zip(batch, texts, strict=True)]
                        captions[name].update(done)
                        stats["captioned"] += len(done)
                        if writer is not None:
                            writer.append(
                                {"image": p, "variant": name, "caption": t, "content_key": key_of(p, name), **common}
                                for p, t in done
                            )
                        progress.advance(task, batch_size)
    finally:
        if writer is not None:
            writer.close()

    records = []
    for path in map(str, paths):
        if path in bad:
            records.append({"image": path, "error": bad[path]})
        else:
            records.append({"image": path, **{name: captions[name].get(path) for name in passes}, **common})
    return records, len(bad), stats


def _emit(
    records: list[dict[str, Any]],
    *,
    compare: bool,
    json_out: bool,
    out: Path | None,
    err: Any,
    stats: dict[str, int] | None = None,
) -> None:
    """With --out, a summary on stderr (captions are in OUT/captions.jsonl); else captions on stdout."""
    if out is not None:
        stats = stats or {}
        if out.is_dir():
            _log_errors(out, records)
        echo_plain(
            err,
            f"{len(records)} image(s): {stats.get('captioned', 0)} caption(s) made, {stats.get('reused', 0)} reused "
            f"(same image and settings), {stats.get('changed', 0)} changed since the last run and redone "
            f"-> {out / CAPTIONS}",
        )
        return
    for rec in records:
        if json_out:  # error records too: machine readers see every input
            typer.echo(json.dumps(rec, ensure_ascii=False))
        elif "error" in rec:
            continue  # already reported on stderr
        elif compare:
            typer.echo(
                f"{rec['image']}\n  original: {_one_line(rec['original'])}\n  safe:     {_one_line(rec['safe'])}"
            )
        else:
            typer.echo(f"{rec['image']}\t{_one_line(rec['caption'])}")


def _log_errors(out: Path, records: list[dict[str, Any]]) -> None:
    """Append this run's unreadable files to OUT/errors.log (captions.jsonl holds captions only)."""
    errors = [f"{r['image']}: {r['error']}" for r in records if "error" in r]
    if errors:
        with open(out / "errors.log", "a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in errors))


def _report(problem: str) -> None:
    """One unwrapped line per problem on stderr (rich would wrap long paths and read '[...]' as markup)."""
    typer.echo(f"error: {problem}", err=True)


def _one_line(text: str) -> str:
    """One record per line, and no raw control characters (a model's output must not drive the terminal)."""
    text = " ".join(text.split())
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
