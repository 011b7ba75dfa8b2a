"""Rebuild every toy weight from scratch, seeded: ``python -m safegen_train.toy.build --out DIR``.

Stages (each logged with its wall time, all recorded in ``DIR/build.json``):

1. world data: JSONL + PNG quadruples for ``safegen-train`` (train and validation splits);
2. toy classifier (safegen.safety.toy's CNN);
3. toy CLIP from scratch on safe and unsafe pairs -> ``DIR/clip``;
4. toy Stable Diffusion: VAE, then a UNet conditioned on the toy CLIP's text tokens -> ``DIR/sd``;
5. toy LLaVA captioner on the toy CLIP's vision tower -> ``DIR/llava``;
6. Safe-CLIP through the product's own path: ``safegen-train fit --config configs/toy_safeclip.yaml``
   then ``safegen-train export`` -> ``DIR/safe_clip`` (trained on the world's template pairs);
7. the toy rewriter (a tiny LlamaForCausalLM, safe caption -> unsafe caption) -> ``DIR/rewriter``;
8. the paper's data chain (rewrite -> filter -> render with the toy SD -> classifier -> build,
   :mod:`safegen_train.toy.chain`) and the same fit on its quadruples -> ``DIR/safe_clip_chain``;
9. the generalisation figures (:mod:`safegen_train.toy.generalisation`: in-distribution vs
   held-out wording, original vs both Safe-CLIPs, same seeds) -> ``build.json``.

The original CLIP and SD are pretrained on every phrasing of the concepts, including
:data:`~safegen_train.toy.world.HELDOUT_PHRASES`; the Safe-CLIP data and the rewriter never
see those.

``--scale`` shrinks data and steps (the slow test runs the whole chain at a small scale).
Weights are stored as fp16 safetensors; every folder loads with ``from_pretrained``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "toy_safeclip.yaml"


def portable_paths(value: Any, roots: dict[str, Path]) -> Any:
    """``value`` with absolute paths under one of ``roots`` written relative to it (prefix + relative path).

    Why: build.json ships with the weights; a path of the machine that built them means
    nothing elsewhere (and leaks its layout). Roots are tried in order of depth, deepest first.
    """
    if isinstance(value, dict):
        return {k: portable_paths(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, roots) for v in value]
    if isinstance(value, (str, Path)) and Path(value).is_absolute():
        path = Path(value).resolve()
        for prefix, root in sorted(roots.items(), key=lambda kv: -len(Path(kv[1]).resolve().parts)):
            try:
                return prefix + path.relative_to(Path(root).resolve()).as_posix()
            except ValueError:
                continue
    return value


def scrub_saved_paths(out: Path, roots: dict[str, Path]) -> list[Path]:
    """Rewrite the build machine's absolute paths in every JSON and model card under ``out``.

    Why: ``save_pretrained`` records where a model was loaded from (``_name_or_path``), and
    the training config and model card record the data files and run folder; shipped weights
    must not carry the layout of the machine that built them. Paths become ``OUT/...``,
    ``WORK/...`` or repo-relative, as in build.json. The scratch folder is skipped. Returns
    the files changed.
    """
    ordered = sorted(roots.items(), key=lambda kv: -len(Path(kv[1]).resolve().parts))
    changed = []
    for path in sorted([*out.rglob("*.json"), *out.rglob("*.md")]):
        if "_work" in path.relative_to(out).parts:
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            try:
                clean = json.dumps(portable_paths(json.loads(text), roots), indent=2, sort_keys=True) + "\n"
            except ValueError:
                continue
            if json.loads(clean) == json.loads(text):
                continue
        else:
            clean = text
            for prefix, root in ordered:
                for form in {str(Path(root).resolve()), str(root)}:
                    clean = clean.replace(form + "/", prefix).replace(form, prefix.rstrip("/") or ".")
            if clean == text:
                continue
        path.write_text(clean, encoding="utf-8")
        changed.append(path)
    return changed


# Full-size settings (scale 1.0); a stage's data and steps are multiplied by --scale.
FULL = {
    "classifier": {"scenes": 4_000, "epochs": 3},
    "clip": {"scenes": 8_000, "steps": 800, "batch_size": 128},
    "vae": {"scenes": 4_000, "steps": 800},
    "sd": {"scenes": 8_000, "steps": 700, "batch_size": 64},
    "llava": {"scenes": 4_000, "steps": 1_200, "batch_size": 32},
    "safe_clip": {"scenes": 4_000, "val_scenes": 256, "steps": 250},
    "rewriter": {"steps": 600},
    "chain": {"repeats": 4},
    "eval": {"per_concept": 6},
}
STAGES = ("data", "classifier", "clip", "sd", "llava", "safe_clip", "rewriter", "chain", "eval")


def _scaled(value: int, scale: float, minimum: int) -> int:
    return max(minimum, int(round(value * scale)))


def run_safeclip_fit(
    clip_dir: Path,
    data_dir: Path,
    run_dir: Path,
    out_dir: Path,
    *,
    config: Path,
    max_steps: int,
    seed: int,
    max_batch_size: int | None = None,
) -> dict[str, Any]:
    """``safegen-train fit`` then ``safegen-train export``: the product's path to a Safe-CLIP.

    ``max_batch_size`` caps the config's batch size (a reduced-scale build's chain data can
    hold fewer quadruples than one full batch, which ``fit`` refuses).
    """
    extra = ["--set", f"batch_size={max_batch_size}"] if max_batch_size else []
    cmd = [
        sys.executable,
        "-m",
        "safegen_train.cli",
        "fit",
        "--config",
        str(config),
        "--set",
        f"model={clip_dir}",
        "--set",
        f"train_data={data_dir / 'train.jsonl'}",
        "--set",
        f"val_data={data_dir / 'val.jsonl'}",
        "--set",
        f"max_steps={max_steps}",
        "--set",
        f"seed={seed}",
        *extra,
        "--output-dir",
        str(run_dir),
        "--overwrite",  # the build's own scratch run folder: a rebuild starts it again
    ]
    _logger.info("running: %s", " ".join(cmd))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO_ROOT))
    if done.returncode != 0:
        # The fit's own one-line error says what is wrong (e.g. an empty validation split); pass it on.
        reason = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"safegen-train fit on {data_dir} failed (exit {done.returncode}): {reason}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    checkpoint = summary.get("best_checkpoint")
    if not checkpoint:
        checkpoints = sorted((run_dir / "checkpoints").glob("*"))
        checkpoint = str(checkpoints[-1])
    export_dir = run_dir / "export"
    cmd = [sys.executable, "-m", "safegen_train.cli", "export", checkpoint, str(export_dir), "--what", "model"]
    _logger.info("running: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=str(REPO_ROOT))
    finalize_clip_folder(export_dir, out_dir, processor_from=clip_dir)
    return summary


def finalize_clip_folder(src: Path, dst: Path, *, processor_from: Path) -> None:
    """Copy an exported CLIPModel to ``dst`` as fp16 safetensors with the toy CLIPProcessor."""
    # Imported when a stage runs it, as the stages' trainers are (see _stage_data).
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from safegen_train.toy.common import save_fp16

    model = CLIPModel.from_pretrained(str(src), dtype=torch.float32)
    if dst.exists():
        shutil.rmtree(dst)
    save_fp16(model, str(dst))
    CLIPProcessor.from_pretrained(str(processor_from)).save_pretrained(str(dst))
    for name in ("training_config.json", "README.md"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


def _previous_stages(
    record: Path, *, scale: float, seed: int, config: str | Path, stages: list[str]
) -> dict[str, Any]:
    """The stage records of an earlier build of ``out`` that this one does not redo, if it was the same build.

    Same scale, seed and config only: a record of another build would mix figures that do not belong together.
    """
    if set(stages) == set(STAGES) or not record.is_file():
        return {}
    try:
        old = json.loads(record.read_text())
    except ValueError:
        return {}
    same_config = portable_paths(str(config), {"": REPO_ROOT}) == old.get("config")
    if old.get("scale") != scale or old.get("seed") != seed or not same_config:
        _logger.warning("%s records another build (scale/seed/config differ): not merged", record)
        return {}
    return {k: v for k, v in old.get("stages", {}).items() if k not in stages}


@dataclass
class _Build:
    """One build's settings and folders, as every stage reads them."""

    out: Path
    work: Path
    scale: float
    seed: int
    config: Path

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    def scaled(self, stage: str, key: str, minimum: int) -> int:
        """The full-size ``FULL[stage][key]`` at this build's scale, at least ``minimum``."""
        return _scaled(FULL[stage][key], self.scale, minimum)

    def batch_size(self, stage: str) -> int:
        """The stage's batch size, no larger than its (scaled) scenes."""
        return min(FULL[stage]["batch_size"], self.scaled(stage, "scenes", 64))


# Each stage imports its trainer when it runs, not at the top: main() sets HF_HUB_OFFLINE first,
# and huggingface_hub (under transformers and diffusers) reads it once, when it is imported.


def _stage_data(b: _Build) -> dict[str, int]:
    from safegen_train.toy.dataset import write_jsonl_dataset  # when the stage runs (see above)

    n_train = b.scaled("safe_clip", "scenes", 64)
    n_val = b.scaled("safe_clip", "val_scenes", 32)
    write_jsonl_dataset(b.data_dir, n_train, b.seed + 3, "train")
    write_jsonl_dataset(b.data_dir, n_val, b.seed + 4, "val")
    return {"train": n_train, "val": n_val}


def _stage_classifier(b: _Build) -> Any:
    from safegen_train.toy.classifier import train_toy_classifier  # when the stage runs (see above)

    return train_toy_classifier(
        b.out / "classifier",
        num_scenes=b.scaled("classifier", "scenes", 64),
        epochs=FULL["classifier"]["epochs"],
        seed=b.seed,
    )


def _stage_clip(b: _Build) -> Any:
    from safegen_train.toy.clip import train_toy_clip  # when the stage runs (see above)

    return train_toy_clip(
        b.out / "clip",
        num_scenes=b.scaled("clip", "scenes", 64),
        steps=b.scaled("clip", "steps", 4),
        batch_size=b.batch_size("clip"),
        seed=b.seed,
    )


def _stage_sd(b: _Build) -> Any:
    from safegen_train.toy.sd import train_toy_sd, train_toy_vae  # when the stage runs (see above)

    train_toy_vae(
        b.work / "vae",
        num_scenes=b.scaled("vae", "scenes", 64),
        steps=b.scaled("vae", "steps", 4),
        seed=b.seed,
    )
    return train_toy_sd(
        b.out / "sd",
        b.out / "clip",
        vae_dir=b.work / "vae",
        num_scenes=b.scaled("sd", "scenes", 64),
        unet_steps=b.scaled("sd", "steps", 4),
        batch_size=b.batch_size("sd"),
        seed=b.seed,
    )


def _stage_llava(b: _Build) -> Any:
    from safegen_train.toy.llava import train_toy_llava  # when the stage runs (see above)

    return train_toy_llava(
        b.out / "llava",
        b.out / "clip",
        num_scenes=b.scaled("llava", "scenes", 64),
        steps=b.scaled("llava", "steps", 4),
        batch_size=b.batch_size("llava"),
        seed=b.seed,
    )


def _stage_safe_clip(b: _Build) -> dict[str, Any]:
    return run_safeclip_fit(
        b.out / "clip",
        b.data_dir,
        b.work / "safeclip_run",
        b.out / "safe_clip",
        config=b.config,
        max_steps=b.scaled("safe_clip", "steps", 4),
        seed=b.seed,
    )


def _stage_rewriter(b: _Build) -> Any:
    from safegen_train.toy.rewriter import train_toy_rewriter  # when the stage runs (see above)

    # Not scaled down: a rewriter trained for fewer steps changes the scene it rewrites, the
    # chain's similarity filter then drops nearly every row, and training takes 20 s anyway.
    return train_toy_rewriter(b.out / "rewriter", steps=FULL["rewriter"]["steps"], seed=b.seed)[2]


def _stage_chain(b: _Build) -> dict[str, Any]:
    from safegen_train.toy.chain import run_toy_chain  # when the stage runs (see above)

    chain = run_toy_chain(
        b.work / "chain",
        rewriter=b.out / "rewriter",
        sd=b.out / "sd",
        clip=b.out / "clip",
        classifier=b.out / "classifier",
        repeats=b.scaled("chain", "repeats", 2),
        seed=b.seed,
    )
    train_rows = chain["build"]["splits"].get("train", 0)
    if train_rows == 0 and b.scale < 1.0:
        # A reduced-scale toy SD rarely draws a concept, so the render check can reject every
        # row; the smoke build says so and goes on (eval then measures the template Safe-CLIP).
        r = chain["render"]
        why = f"no training quadruple at --scale {b.scale}: render kept {r['kept']} of {r['rows']} rows"
        why += f" (rejected: {r['rejected']})"
        chain["fit"] = {"skipped": why}
        _logger.warning("chain fit skipped: %s", chain["fit"]["skipped"])
        return chain
    chain["fit"] = run_safeclip_fit(
        b.out / "clip",
        Path(chain["dataset"]),
        b.work / "chain_run",
        b.out / "safe_clip_chain",
        config=b.config,
        max_steps=b.scaled("safe_clip", "steps", 4),
        seed=b.seed,
        max_batch_size=min(64, train_rows) if b.scale < 1.0 else None,
    )
    return chain


def _stage_eval(b: _Build) -> dict[str, Any]:
    from safegen_train.toy.generalisation import measure_generalisation  # when the stage runs (see above)

    encoders = {"safe_clip": b.out / "safe_clip"}
    if (b.out / "safe_clip_chain").is_dir():
        encoders["safe_clip_chain"] = b.out / "safe_clip_chain"
    return measure_generalisation(
        b.work / "eval",
        base=b.out / "sd",
        safe_encoders=encoders,
        clip=b.out / "clip",
        per_concept=b.scaled("eval", "per_concept", 3),
    )


# What each of STAGES runs, in that order.
_STAGE_RUNS: dict[str, Callable[[_Build], Any]] = {
    "data": _stage_data,
    "classifier": _stage_classifier,
    "clip": _stage_clip,
    "sd": _stage_sd,
    "llava": _stage_llava,
    "safe_clip": _stage_safe_clip,
    "rewriter": _stage_rewriter,
    "chain": _stage_chain,
    "eval": _stage_eval,
}


def _run_stage(name: str, b: _Build) -> dict[str, Any]:
    """Run one stage; its record in build.json (wall time and result)."""
    t0 = time.time()
    _logger.info("=== stage %s", name)
    result = _STAGE_RUNS[name](b)
    record = {"seconds": round(time.time() - t0, 1), "result": result}
    _logger.info("=== stage %s done in %.0fs", name, time.time() - t0)
    return record


def build(
    out: str | Path,
    *,
    work: str | Path | None = None,
    scale: float = 1.0,
    seed: int = 0,
    config: str | Path = DEFAULT_CONFIG,
    stages: list[str] | None = None,
) -> dict[str, Any]:
    """Run the stages; returns (and writes to ``out/build.json``) timings and held-out metrics."""
    # 1. The folders and the stages asked for
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work) if work is not None else out / "_work"
    work.mkdir(parents=True, exist_ok=True)
    stages = stages or list(STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown build stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    report: dict[str, Any] = {"scale": scale, "seed": seed, "config": str(config), "stages": {}}
    previous = _previous_stages(out / "build.json", scale=scale, seed=seed, config=config, stages=stages)

    # 2. Each stage asked for, in the build's order
    t_all = time.time()
    b = _Build(out=out, work=work, scale=scale, seed=seed, config=Path(config))
    for name in STAGES:
        if name in stages:
            report["stages"][name] = _run_stage(name, b)
    report["seconds"] = round(time.time() - t_all, 1)

    # 3. A partial rebuild: the stages it did not run keep their record, and the total is the sum
    if previous:
        report["stages"] = {**previous, **report["stages"]}
        report["stages"] = {k: report["stages"][k] for k in STAGES if k in report["stages"]}
        report["seconds"] = round(sum(v["seconds"] for v in report["stages"].values()), 1)

    # 4. build.json, and no path of this machine in anything shipped
    roots = {"": REPO_ROOT, "OUT/": out, "WORK/": work}
    scrub_saved_paths(out, roots)
    portable = portable_paths(report, roots)
    (out / "build.json").write_text(json.dumps(portable, indent=2, default=str) + "\n")
    _logger.info("toy build done in %.0fs: %s", report["seconds"], out)
    return report


def main(argv: list[str] | None = None) -> None:
    """Command line of the rebuild."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="where the weights go (safegen/assets/toy ships them)")
    p.add_argument("--work", default=None, help="scratch folder for data and runs (default OUT/_work)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply data and steps (0.05: a smoke build)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the safegen-train fit config of the Safe-CLIP")
    p.add_argument("--stages", default=None, help="comma list of " + ",".join(STAGES) + " (default: all)")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stages = args.stages.split(",") if args.stages else None
    build(args.out, work=args.work, scale=args.scale, seed=args.seed, config=args.config, stages=stages)
    if args.work is None and not args.keep_work:
        shutil.rmtree(Path(args.out) / "_work", ignore_errors=True)


if __name__ == "__main__":
    main()
