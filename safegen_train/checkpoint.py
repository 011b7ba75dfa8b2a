"""Training checkpoints: safetensors and JSON only, written atomically, each carrying its config.

A checkpoint folder ``<output_dir>/checkpoints/step-00000042/`` holds

- ``trainable.safetensors``: the trained tensors (LoRA adapters, or the tower weights);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state (tensors / the rest);
- ``rng.safetensors``: every process's torch RNG state (dropout continues exactly);
- ``state.json``: step, epoch, early-stopping state, last validation;
- ``config.json``: the full :class:`~safegen_train.config.TrainConfig`.

Nothing is pickled, so a checkpoint from anywhere can be opened safely.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from safegen.core.errors import SafegenError
from safegen.core.io import atomic_directory
from safegen_train.config import TrainConfig

_logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")


def optimizer_to_safetensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into flat tensors and a JSON-able remainder."""
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_safetensors`."""
    state: dict[int, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any] | None,
    rng_states: torch.Tensor | None,
    state: dict[str, Any],
    config: TrainConfig,
) -> Path:
    """Write one checkpoint folder atomically (main process only)."""
    from safetensors.torch import save_file

    with atomic_directory(folder) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        if optimizer_state is not None:
            tensors, meta = optimizer_to_safetensors(optimizer_state)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(meta, indent=1))
        if rng_states is not None:
            save_file({"cpu": rng_states.cpu().contiguous()}, str(tmp / "rng.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        (tmp / "state.json").write_text(json.dumps(state, indent=2))  # written last: marks completeness
    return folder


class CheckpointError(SafegenError):
    """A checkpoint folder is missing, incomplete or unreadable (the message names the path)."""


def copy_checkpoint(source: Path, dest: Path) -> Path:
    """Copy a complete checkpoint folder to ``dest`` atomically, replacing an older copy there."""
    import shutil

    with atomic_directory(dest) as tmp:
        for item in Path(source).iterdir():
            if item.name != "state.json":
                shutil.copy2(item, tmp / item.name)
        shutil.copy2(Path(source) / "state.json", tmp / "state.json")  # last: marks completeness
    return dest


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """Read a checkpoint folder into {trainable, optimizer, rng, state, config}.

    Any damage (truncated or garbage safetensors, broken JSON, a missing file) is one
    :class:`CheckpointError` naming the file, never a raw parser error.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"'{folder}' is not a complete checkpoint (no state.json)")
    current = folder / "state.json"
    try:
        state = json.loads(current.read_text())
        if not isinstance(state, dict):
            raise ValueError("state.json is not a JSON object")
        current = folder / "config.json"
        config = TrainConfig.load(current)
        current = folder / "trainable.safetensors"
        out: dict[str, Any] = {
            "trainable": load_file(str(current)),
            "state": state,
            "config": config,
            "optimizer": None,
            "rng": None,
        }
        if (folder / "optimizer.safetensors").is_file():
            current = folder / "optimizer.json"
            meta = json.loads(current.read_text())
            current = folder / "optimizer.safetensors"
            out["optimizer"] = optimizer_from_safetensors(load_file(str(current)), meta)
        if (folder / "rng.safetensors").is_file():
            current = folder / "rng.safetensors"
            out["rng"] = load_file(str(current))["cpu"]
    except Exception as exc:  # noqa: BLE001 - safetensors, JSON and config errors all mean "this file is damaged"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint file '{current}' is unreadable ({reason[:200]})") from exc
    return out


def step_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for p in checkpoints_dir.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resume_candidates(resume: str, output_dir: Path) -> list[Path]:
    """Checkpoints to try for ``resume``, best first: for 'latest' the run's complete step
    checkpoints newest first (empty when there is none); else the one folder given."""
    if resume == "latest":
        return list(reversed(step_checkpoints(Path(output_dir) / "checkpoints")))
    path = Path(resume).expanduser()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"resume: '{resume}' is not a checkpoint folder (no state.json); use 'latest' or a path")
    return [path]


def resolve_resume(resume: str, output_dir: Path) -> Path | None:
    """'latest' -> the newest complete checkpoint of the run (None when there is none); else the path."""
    found = resume_candidates(resume, output_dir)
    return found[0] if found else None


def load_resume_checkpoint(resume: str, output_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """Load the checkpoint ``resume`` names; None when 'latest' finds no checkpoint at all.

    With 'latest' a damaged newest checkpoint is reported (its path and what is wrong) and the
    previous one is tried, so a crash during a save, or a disk error, costs one checkpoint
    interval instead of the run. A path given explicitly is never swapped for another.
    """
    candidates = resume_candidates(resume, output_dir)
    failures = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as exc:
            failures.append(str(exc))
            if resume != "latest":
                raise
            _logger.warning("resume: %s; falling back to the previous checkpoint", exc)
            continue
        if failures:
            _logger.warning("resume: using '%s' (%d newer checkpoint(s) unreadable)", path, len(failures))
        return path, ckpt
    if failures:
        where = Path(output_dir) / "checkpoints"
        raise CheckpointError(f"resume: no readable checkpoint in '{where}': {failures[-1]}")
    return None


def start_overrides(resume: str, output_dir: Path) -> dict[str, Any]:
    """The overrides (``--set`` and flags) the run was started with, read from the checkpoint
    ``resume`` would pick (the newest with a readable state.json); empty when none is recorded."""
    try:
        candidates = resume_candidates(resume, output_dir)
    except CheckpointError:
        return {}
    for path in candidates:
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and isinstance(state.get("overrides"), dict):
            return state["overrides"]
        return {}
    return {}


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest step checkpoints."""
    found = step_checkpoints(checkpoints_dir)
    for old in found[: max(0, len(found) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
