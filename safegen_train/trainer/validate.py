"""Validation during training: loss and retrieval recall, the best checkpoints, early stopping.

Sharded like training: each process scores its share of the validation batches and the
gathered results equal what one process would compute.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from safegen_train.checkpoint import copy_checkpoint
from safegen_train.sharding import gather_in_order
from safegen_train.trainer.checkpointing import save_run_checkpoint
from safegen_train.trainer.metrics import MetricsLog
from safegen_train.trainer.schedule import EarlyStopping
from safegen_train.trainer.state import TrainRun, TrainState
from safegen_train.validation import (
    embed_dataset,
    flatten_table,
    mean_of_batches,
    recall_sum,
    retrieval_table,
    validation_loss_per_batch,
)

# The name the training log lines have always carried ("INFO safegen_train.train: ..."), whichever
# trainer module writes them.
_logger = logging.getLogger("safegen_train.train")


def validate(run: TrainRun, state: TrainState, metrics: MetricsLog) -> None:
    """Score the validation set; log it, keep the best checkpoints and count the patience down."""
    if run.val_ds is None:
        return
    # 1. Loss parts and retrieval table, each process scoring its share
    losses, table = score_validation(run)
    rsum = recall_sum(table)

    # 2. The early-stopping rule: did either metric improve, how much patience is left
    before = (state.best_val_loss, state.best_recall_sum)
    stopper = EarlyStopping(run.config.patience, state.best_val_loss, state.best_recall_sum, state.patience_left)
    improved = stopper.update(losses["loss"], rsum)
    state.best_val_loss, state.best_recall_sum = stopper.best_loss, stopper.best_recall_sum
    state.patience_left = stopper.patience_left
    state.last_validation = validation_summary(losses, table, rsum)

    # 3. The metrics line
    metrics.write(
        {
            "split": "val",
            "step": state.global_step,
            "epoch": state.epoch,
            **{f"val/{k}": v for k, v in losses.items()},
            **{f"val/{k}": v for k, v in flatten_table(table).items()},
            "val/recall_sum": rsum,
            "improved": improved,
            "patience_left": state.patience_left,
        }
    )

    # 4. The best checkpoints, of each metric that improved
    if improved:
        after = (stopper.best_loss, stopper.best_recall_sum)
        metrics_improved = zip(("loss", "recall"), before, after, strict=True)
        keep_best(run, state, [name for name, old, new in metrics_improved if new != old])

    # 5. Stop once the patience ran out
    if stopper.should_stop:
        state.stopped_early = True
        _logger.info(
            "early stopping at step %d: %d validations without improvement", state.global_step, run.config.patience
        )


def score_validation(run: TrainRun) -> tuple[dict[str, float], dict[str, Any]]:
    """(mean loss parts, retrieval table) of the validation set under the current weights."""
    t0 = time.perf_counter()
    accelerator, val_ds, world = run.accelerator, run.val_ds, run.accelerator.num_processes
    unwrapped = accelerator.unwrap_model(run.model)
    # each process scores its share of the batches; the gathered results equal one process's
    shard = dict(device=accelerator.device, rank=accelerator.process_index, world=world)
    per_batch = validation_loss_per_batch(
        unwrapped, run.val_loss_fn, val_ds, run.collate, batch_size=run.micro_batch, **shard
    )
    n_loss_batches = math.ceil(len(val_ds) / run.micro_batch)
    losses = mean_of_batches(gather_in_order(accelerator, per_batch, n_loss_batches, 1))
    unwrapped.eval()
    size = run.config.embed_batch_size
    embeddings = embed_dataset(unwrapped.clip, val_ds, run.collate, batch_size=size, **shard)
    table = retrieval_table(gather_in_order(accelerator, embeddings, len(val_ds), size))
    unwrapped.train()
    _logger.info("validated %d records in %.2fs (%d process(es))", len(val_ds), time.perf_counter() - t0, world)
    return losses, table


def validation_summary(losses: dict[str, float], table: dict[str, Any], rsum: float | None) -> dict[str, Any]:
    """What a checkpoint's state records of its validation (JSON: recall keys as strings)."""
    return {
        "loss": losses,
        "recall": {g: {d: {str(k): v for k, v in r.items()} for d, r in dirs.items()} for g, dirs in table.items()},
        "recall_sum": rsum,
    }


def keep_best(run: TrainRun, state: TrainState, improved: list[str]) -> None:
    """Checkpoint ``best`` now, and copy it to ``best-loss`` / ``best-recall`` for each metric in ``improved``.

    The release keeps two bests: lowest validation loss and highest recall-sum. "best" is the
    latest of either; best-loss / best-recall are copies, selectable at export (export_best).
    """
    for name in improved:
        state.set_best_checkpoint_of(name, run.ckpt_dir / f"best-{name}")
    state.best_checkpoint = str(save_run_checkpoint(run, state, "best"))
    if run.is_main:
        for name in improved:
            copy_checkpoint(run.ckpt_dir / "best", run.ckpt_dir / f"best-{name}")
