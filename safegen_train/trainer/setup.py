"""Setting a run up: agreeing on errors across processes, the image cache, the reference cache, the optimizer."""

from __future__ import annotations

import logging
from typing import Any

import torch

from safegen.core.errors import SafegenError
from safegen_train.checkpoint import CheckpointError
from safegen_train.config import ConfigError, TrainConfig
from safegen_train.data import Collator, PairDataset
from safegen_train.model import SafeCLIPModule
from safegen_train.sharding import batch_items, gather_in_order, owned_batches

# The name the training log lines have always carried ("INFO safegen_train.train: ..."), whichever
# trainer module writes them.
_logger = logging.getLogger("safegen_train.train")


@torch.no_grad()
def compute_reference_cache(
    module: SafeCLIPModule,
    dataset: PairDataset,
    collate: Collator,
    *,
    batch_size: int,
    device: Any,
    accelerator: Any = None,
) -> dict[str, torch.Tensor]:
    """T0(t) (N, D) and V0(v) (N, D) for every record, from the frozen reference encoders.

    With an ``accelerator`` of several processes each computes its share of the batches and
    the tables are gathered (:mod:`safegen_train.sharding`): every process holds the full
    tables, computed in the batches one process would use.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    was_training = module.training
    module.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        for b in owned_batches(len(dataset), batch_size, rank, world):
            items = [dataset[i] for i in batch_items(b, len(dataset), batch_size)]
            batch = {k: v.to(device) for k, v in collate(items).items()}
            for key, value in module.encode_reference(batch).items():
                chunks.setdefault(key, []).append(value.float())
    finally:
        module.train(was_training)
    local = {k: torch.cat(v) for k, v in chunks.items()}
    if world == 1:
        return local
    return {k: v.to(device) for k, v in gather_in_order(accelerator, local, len(dataset), batch_size).items()}


def create_optimizer(module: SafeCLIPModule, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _agree(accelerator: Any, problem: BaseException | None) -> None:
    """Raise on every process when the main process found ``problem`` (so none waits forever)."""
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        from safegen_train.export_folder import ExportTargetError
        from safegen_train.run_folder import RunFolderError, RunInUseError

        kinds = {
            c.__name__: c for c in (ConfigError, CheckpointError, ExportTargetError, RunFolderError, RunInUseError)
        }
        message = [(type(problem).__name__, str(problem)) if problem is not None else None]
        broadcast_object_list(message, from_process=0)
        if message[0] is not None and problem is None:  # the same error class, so every rank exits alike
            problem = kinds.get(message[0][0], SafegenError)(message[0][1])
    if problem is not None:
        raise problem


def _use_preprocessed(folder: str, processor: Any, *datasets: PairDataset | None) -> None:
    """Point the datasets at the pre-processed image cache, saying how much of the data it covers."""
    from safegen_train.pixel_cache import PreprocessedImages

    cache = PreprocessedImages(folder, processor)
    for name, ds in zip(("training", "validation"), datasets, strict=False):
        if ds is None:
            continue
        found, total = ds.use_preprocessed(cache)
        if found < total:
            _logger.warning(
                "preprocessed cache '%s' holds %d of %d %s images; the other %d (new or edited since) are decoded "
                "as usual; run `safegen-train data preprocess` to add them",
                folder,
                found,
                total,
                name,
                total - found,
            )
        else:
            _logger.info("preprocessed cache '%s': all %d %s images read from it", folder, total, name)
