"""Run checkpoints: saving one (every process's RNG state in it), resuming from one, and the check
that a resume trains what the run trained (the folder format is :mod:`safegen_train.checkpoint`'s)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from safegen_train.checkpoint import CheckpointError, prune_checkpoints, save_checkpoint
from safegen_train.config import ConfigError, TrainConfig, resume_differences
from safegen_train.trainer.state import TrainRun, TrainState

# The name the training log lines have always carried ("INFO safegen_train.train: ..."), whichever
# trainer module writes them.
_logger = logging.getLogger("safegen_train.train")


def gather_rng_states(accelerator: Any) -> torch.Tensor:
    """Every process's CPU (and current CUDA) RNG state, gathered: (world, S) uint8."""
    state = torch.get_rng_state()
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(accelerator.device)])
    local = state.to(accelerator.device).unsqueeze(0)  # (1, S)
    if accelerator.num_processes == 1:
        return local.cpu()
    return accelerator.gather(local).cpu()  # (world, S)


def restore_rng_states(accelerator: Any, states: torch.Tensor) -> None:
    """This process's RNG state from a checkpoint's (world, S) table; kept as is for another world size."""
    if states.shape[0] != accelerator.num_processes:
        _logger.warning(
            "checkpoint has RNG states of %d processes, this run has %d: dropout will differ",
            states.shape[0],
            accelerator.num_processes,
        )
        return
    state = states[accelerator.process_index]
    cpu_len = torch.get_rng_state().numel()
    torch.set_rng_state(state[:cpu_len].clone())
    if state.numel() > cpu_len and accelerator.device.type == "cuda":
        torch.cuda.set_rng_state(state[cpu_len:].clone(), accelerator.device)


def save_run_checkpoint(run: TrainRun, state: TrainState, name: str) -> Path:
    """Checkpoint ``name`` (``step-00000042``, ``best``) of the run: weights, optimizer, RNG, state, config.

    Every process takes part (the RNG states are gathered); the main process writes, and prunes
    the step checkpoints beyond ``keep_checkpoints``.
    """
    rng = gather_rng_states(run.accelerator)
    folder = run.ckpt_dir / name
    if run.is_main:
        save_checkpoint(
            folder,
            trainable=run.module.trainable_state_dict(),
            optimizer_state=run.optimizer.state_dict(),
            rng_states=rng,
            state=state.to_dict(),
            config=run.config,
        )
        if name.startswith("step-"):
            prune_checkpoints(run.ckpt_dir, run.config.keep_checkpoints)
    run.accelerator.wait_for_everyone()
    return folder


def restore_checkpoint(run: TrainRun, state: TrainState, folder: Path, checkpoint: dict[str, Any]) -> None:
    """Continue from ``checkpoint`` (read from ``folder``): trained weights, optimizer, state and RNG."""
    try:
        run.module.load_trainable_state_dict(checkpoint["trainable"])
        if checkpoint["optimizer"] is not None:
            run.optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint '{folder}' does not fit this model ({str(exc).splitlines()[0][:200]})"
        ) from exc
    state.update(checkpoint["state"])
    if checkpoint["rng"] is not None:
        restore_rng_states(run.accelerator, checkpoint["rng"])
    _logger.info("resumed from %s at step %d", folder, state.global_step)


def check_resume(saved: TrainConfig, given: TrainConfig, checkpoint: Path) -> None:
    """Refuse a resume whose settings would train something else than the run it continues."""
    diffs = resume_differences(saved, given)
    if diffs:
        listed = "; ".join(diffs[:4]) + (f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else "")
        raise ConfigError(
            f"resume from '{checkpoint}' would change the run: {listed}; resume with the run's settings "
            f"(see {checkpoint / 'config.json'}) or start a new run (--overwrite or another --output-dir)"
        )
