"""What a checkpoint carries besides weights, and what a resume must agree with.

Every process's RNG state (so dropout continues exactly), the metrics lines a resumed run
logs again, and the check that a resume trains what the run trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from safegen_train.config import ConfigError, TrainConfig, resume_differences
from safegen_train.io import atomic_write_text

# The name the training log lines have always carried ("INFO safegen_train.train: ..."), whichever
# trainer module writes them.
_logger = logging.getLogger("safegen_train.train")


def _rng_state(accelerator: Any) -> torch.Tensor:
    """Every process's CPU (and current CUDA) RNG state, gathered: (world, S) uint8."""
    state = torch.get_rng_state()
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(accelerator.device)])
    local = state.to(accelerator.device).unsqueeze(0)  # (1, S)
    if accelerator.num_processes == 1:
        return local.cpu()
    return accelerator.gather(local).cpu()  # (world, S)


def _set_rng_state(accelerator: Any, states: torch.Tensor) -> None:
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


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics lines logged after ``last_step``: a resumed run logs those steps again, and
    metrics.jsonl should hold each step once, as the uninterrupted run would."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            step = 0  # not ours to judge: keep it
        if isinstance(step, int) and step > last_step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        _logger.info("resume: dropped %d metrics line(s) logged after step %d", dropped, last_step)


def check_resume(saved: TrainConfig, given: TrainConfig, checkpoint: Path) -> None:
    """Refuse a resume whose settings would train something else than the run it continues."""
    diffs = resume_differences(saved, given)
    if diffs:
        listed = "; ".join(diffs[:4]) + (f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else "")
        raise ConfigError(
            f"resume from '{checkpoint}' would change the run: {listed}; resume with the run's settings "
            f"(see {checkpoint / 'config.json'}) or start a new run (--overwrite or another --output-dir)"
        )
