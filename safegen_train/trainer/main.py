"""``fit``: a Safe-CLIP run from its config to its checkpoints, metrics and exported model."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from safegen.core.io import atomic_write_text
from safegen_train.config import TrainConfig
from safegen_train.export import export_module
from safegen_train.model import SafeCLIPModule
from safegen_train.trainer.checkpointing import restore_checkpoint, save_run_checkpoint
from safegen_train.trainer.loop import train_epochs
from safegen_train.trainer.metrics import MetricsLog, truncate_metrics
from safegen_train.trainer.setup import set_up
from safegen_train.trainer.start import agree, claim_run_folder, create_accelerator, read_resume
from safegen_train.trainer.state import TrainRun, TrainState

# The name the training log lines have always carried ("INFO safegen_train.train: ..."), whichever
# trainer module writes them.
_logger = logging.getLogger("safegen_train.train")


@dataclass
class FitResult:
    """What a finished ``fit`` leaves behind."""

    output_dir: Path
    global_step: int
    stopped_early: bool
    last_validation: dict[str, Any] | None
    best_checkpoint: Path | None
    export_dir: Path | None
    module: SafeCLIPModule | None = field(default=None, repr=False)


def fit(
    config: TrainConfig,
    *,
    accelerator: Any = None,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
) -> FitResult:
    """Train a Safe-CLIP as ``config`` says; returns where everything went.

    ``overwrite`` starts again in a folder that holds an earlier run (removing only that run's
    files); ``overrides`` (the ``--set`` values and flags given at the start) are recorded in
    every checkpoint so that ``--resume latest`` can apply them again.
    """
    config.require_sources()
    out_dir = Path(config.output_dir)
    # 1. One accelerator for the run: one process, DDP or multi-node alike
    if accelerator is None:
        accelerator = create_accelerator(config, out_dir)

    # 2. The run folder, held by the main process, before any data or model is loaded
    lock, problem = claim_run_folder(accelerator, config, out_dir, overwrite=overwrite)
    try:
        agree(accelerator, problem)
        # 3. The checkpoint to resume, checked against this run's settings
        resumed = read_resume(accelerator, config, out_dir)
        # 4. The training proper
        return _train(config, accelerator, resumed, overrides or {})
    finally:
        if lock is not None:
            lock.release()


def _train(
    config: TrainConfig,
    accelerator: Any,
    resumed: tuple[Path, dict[str, Any]] | None,
    overrides: dict[str, Any],
) -> FitResult:
    """The training proper, once the run folder is held and the resume checkpoint is read."""
    # 1. The parts: seeds, data, model, batches, reference cache, optimizer
    run, term_samples = set_up(config, accelerator)

    # 2. Where the run starts: step 0, or the resumed checkpoint's weights, optimizer, state and RNG
    state = TrainState(patience_left=config.patience, overrides=overrides)
    if resumed is not None:
        restore_checkpoint(run, state, *resumed)

    # 3. The run folder's own files: config.json, the trackers, metrics.jsonl
    metrics = open_run_folder(run, state, term_samples)

    # 4. Train until the steps, the epochs or the patience run out
    train_epochs(run, state, metrics)

    # 5. The last step's checkpoint, and the model exported from the best one
    final = run.ckpt_dir / f"step-{state.global_step:08d}"
    if not (final / "state.json").is_file():
        save_run_checkpoint(run, state, final.name)
    export_dir = None
    if config.export_on_finish and run.is_main:
        export_dir = export_best(run, state, final)

    # 6. Done: the trackers closed, the run's state.json
    accelerator.wait_for_everyone()
    if config.report_to:
        accelerator.end_training()
    if run.is_main:
        atomic_write_text(run.out_dir / "state.json", json.dumps(state.to_dict(), indent=2))
    best = state.best_checkpoint
    return FitResult(
        run.out_dir,
        state.global_step,
        state.stopped_early,
        state.last_validation,
        Path(best) if best else None,
        export_dir,
        run.module,
    )


def open_run_folder(run: TrainRun, state: TrainState, term_samples: dict[str, int]) -> MetricsLog:
    """Write the run's config.json, start the trackers, and open metrics.jsonl (a resume first drops
    the lines logged after its step)."""
    config = run.config
    if run.is_main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        config.save(run.out_dir / "config.json")
    if config.report_to:
        run.accelerator.init_trackers("safegen_train", config={k: str(v) for k, v in config.to_dict().items()})
    metrics_path = run.out_dir / "metrics.jsonl"
    if config.resume and run.is_main:  # also when 'latest' found no checkpoint: the run starts at step 0
        truncate_metrics(metrics_path, state.global_step)
    return MetricsLog(metrics_path, run.accelerator, report_to=config.report_to, term_samples=term_samples)


def export_best(run: TrainRun, state: TrainState, final: Path) -> Path:
    """Export the checkpoint ``export_best`` names (the last step's when there is none) to ``OUT/model``.

    The model card reports the exported checkpoint's own validation and step, not the run's last.
    """
    best = state.best_checkpoint_for(run.config.export_best)
    validation, step = state.last_validation, state.global_step
    if best and Path(best, "trainable.safetensors").is_file():
        run.module.load_trainable_state_dict(load_file(str(Path(best) / "trainable.safetensors")))
        saved = json.loads(Path(best, "state.json").read_text())
        validation, step = saved.get("last_validation"), saved.get("global_step", step)
    return export_module(
        run.module,
        run.out_dir / "model",
        config=run.config,
        loaded=run.loaded,
        validation=validation,
        step=step,
        source_checkpoint=best or str(final),
    )
