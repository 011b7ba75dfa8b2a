"""Starting a run, before any data or model loads: the accelerator, the run folder, the checkpoint to resume.

Only the main process checks and claims the run folder; what it finds wrong is raised on every
process (:func:`agree`), so that none of them waits forever in a collective call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list

from safegen.core.errors import SafegenError
from safegen.core.output_folder import claim_output_folder
from safegen_train.checkpoint import CheckpointError, load_resume_checkpoint
from safegen_train.config import ConfigError, TrainConfig
from safegen_train.export_folder import ExportTargetError, check_export_target
from safegen_train.run_folder import (
    FIT_COMMAND,
    RunFolderError,
    RunInUseError,
    RunLock,
    check_output_dir,
    clear_previous_run,
)
from safegen_train.trainer.checkpointing import check_resume

# The name the training log lines have always carried ("INFO safegen_train.train: ..."), whichever
# trainer module writes them.
_logger = logging.getLogger("safegen_train.train")

# The errors that every process raises alike when the main process found one (any other: SafegenError).
_AGREED_ERRORS = {
    c.__name__: c for c in (ConfigError, CheckpointError, ExportTargetError, RunFolderError, RunInUseError)
}


def create_accelerator(config: TrainConfig, out_dir: Path) -> Accelerator:
    """The run's accelerator: CPU or not, mixed precision, trackers."""
    kwargs = dict(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        log_with=config.report_to or None,
        project_dir=str(out_dir),
    )
    try:
        return Accelerator(**kwargs)
    except ValueError as exc:  # accelerate keeps one state per process; a second fit may change precision
        if "already been initialized" not in str(exc):
            raise
        AcceleratorState._reset_state()  # the process-group (PartialState) is kept
        return Accelerator(**kwargs)


def agree(accelerator: Any, problem: BaseException | None) -> None:
    """Raise on every process when the main process found ``problem`` (so none waits forever)."""
    if accelerator.num_processes > 1:
        message = [(type(problem).__name__, str(problem)) if problem is not None else None]
        broadcast_object_list(message, from_process=0)
        if message[0] is not None and problem is None:  # the same error class, so every rank exits alike
            problem = _AGREED_ERRORS.get(message[0][0], SafegenError)(message[0][1])
    if problem is not None:
        raise problem


def claim_run_folder(
    accelerator: Any, config: TrainConfig, out_dir: Path, *, overwrite: bool
) -> tuple[RunLock | None, SafegenError | None]:
    """On the main process: check the run folder, lock it, mark it ours, clear an earlier run when
    ``overwrite``, check the export target. Returns the lock (to release) and the problem found."""
    lock, problem = None, None
    if accelerator.is_main_process:
        try:
            check_output_dir(out_dir, resume=config.resume, overwrite=overwrite)
            lock = RunLock(out_dir)
            lock.acquire()
            claim_output_folder(out_dir, FIT_COMMAND, flag="--output-dir")  # removed with the lock if unused
            if overwrite:
                removed = clear_previous_run(out_dir)
                if removed:
                    _logger.warning("overwrite: removed the earlier run's %s from '%s'", ", ".join(removed), out_dir)
            if config.export_on_finish:
                check_export_target(out_dir / "model")  # refused now, not after training
        except SafegenError as exc:
            problem = exc
    return lock, problem


def read_resume(accelerator: Any, config: TrainConfig, out_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``config.resume`` names (folder, contents), checked against this run's settings;
    None for a fresh run, also when ``latest`` finds no checkpoint."""
    if not config.resume:
        return None
    resumed, problem = None, None
    try:
        resumed = load_resume_checkpoint(config.resume, out_dir)
        if resumed is not None:
            check_resume(resumed[1]["config"], config, resumed[0])
    except SafegenError as exc:
        problem = exc
    agree(accelerator, problem)
    if resumed is None:
        _logger.warning("resume: latest asked for but '%s' has no checkpoint; starting fresh", out_dir)
    return resumed
