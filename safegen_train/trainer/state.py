"""What a run holds: the parts set up once (:class:`TrainRun`) and where it is (:class:`TrainState`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from safegen_train.adversarial import ImageAdversary
from safegen_train.config import TrainConfig
from safegen_train.data import Collator, PairDataset, ShardedBatchSampler
from safegen_train.losses import SafeCLIPLoss
from safegen_train.model import LoadedCLIP, SafeCLIPModule


@dataclass
class TrainState:
    """Where the run is: step, epoch, early stopping, bests; each checkpoint's ``state.json``.

    ``state.json`` holds these fields in this order, then :attr:`later`: the keys written only
    once they have a value, in the order they got one (``best_loss_checkpoint``,
    ``best_recall_checkpoint``, ``adversarial_images``), and any key of a resumed checkpoint
    that this version does not know, kept as it was read.
    """

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_val_loss: float | None = None
    best_recall_sum: float | None = None
    patience_left: int = 0
    stopped_early: bool = False
    last_validation: dict[str, Any] | None = None
    best_checkpoint: str | None = None  # the latest of the best-loss and best-recall checkpoints
    overrides: dict[str, Any] | None = None  # the --set values and flags the run started with
    later: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``state.json`` mapping."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "later"}
        out.update(self.later)
        return out

    def update(self, saved: Mapping[str, Any]) -> None:
        """Take the values of a checkpoint's ``state.json`` (a resume)."""
        names = {f.name for f in fields(self)} - {"later"}
        for key, value in saved.items():
            if key in names:
                setattr(self, key, value)
            else:
                self.later[key] = value

    def best_checkpoint_for(self, which: str) -> str | None:
        """The checkpoint ``export_best`` names: ``latest`` (of either best), ``loss`` or ``recall``."""
        return self.best_checkpoint if which == "latest" else self.later.get(f"best_{which}_checkpoint")

    def set_best_checkpoint_of(self, metric: str, folder: Path) -> None:
        """Record ``folder`` as the checkpoint of the best ``metric`` (``loss`` or ``recall``)."""
        self.later[f"best_{metric}_checkpoint"] = str(folder)

    @property
    def adversarial_images(self) -> int:
        """Unsafe images replaced by their adversarial perturbation so far."""
        return self.later.get("adversarial_images", 0)

    @adversarial_images.setter
    def adversarial_images(self, count: int) -> None:
        self.later["adversarial_images"] = count


@dataclass
class TrainRun:
    """The parts of a run, set up once (:func:`safegen_train.trainer.setup.set_up`) and then only used."""

    config: TrainConfig
    accelerator: Any  # accelerate.Accelerator
    loaded: LoadedCLIP
    module: SafeCLIPModule  # what is trained, checkpointed and exported
    model: Any  # the same module as accelerate prepared it (DDP-wrapped on several processes)
    optimizer: torch.optim.Optimizer
    loss_fn: SafeCLIPLoss
    val_loss_fn: SafeCLIPLoss  # in-batch negatives of each process only: validation is sharded
    collate: Collator
    train_ds: PairDataset
    val_ds: PairDataset | None
    sampler: ShardedBatchSampler
    loader: Any  # torch DataLoader over ``sampler``
    micro_batch: int  # the global micro-batch: batch_size / grad_accum_steps
    steps_per_epoch: int
    total_steps: int
    cache: dict[str, torch.Tensor] | None  # T0(t) / V0(v) per record, or None (computed per step)
    adversary: ImageAdversary | None

    @property
    def out_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process
