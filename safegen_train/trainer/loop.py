"""The optimizer step's gradients: micro-batches, accumulation and the adversarial images."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from safegen_train.adversarial import ImageAdversary
from safegen_train.losses import SafeCLIPLoss


def accumulate_gradients(
    accelerator: Any,
    model: Any,
    loss_fn: SafeCLIPLoss,
    micro_batches: list[dict[str, torch.Tensor]],
    *,
    cache: dict[str, torch.Tensor] | None = None,
    adversary: ImageAdversary | None = None,
    step: int = 0,
) -> dict[str, float]:
    """Backpropagate the mean loss of ``micro_batches`` into ``.grad``; return the mean loss parts.

    Each micro-batch loss is scaled by 1/len and backpropagated on its own (DDP syncs
    gradients on the last one only), so the gradients add up to the mean of the
    micro-batch gradients: nothing is discarded. With an ``adversary`` active at optimizer
    step ``step``, each micro-batch's chosen unsafe images are replaced by their PGD
    perturbation against the current tower first (:mod:`safegen_train.adversarial`).
    """
    parts_sum: dict[str, float] = {}
    n = len(micro_batches)
    for i, batch in enumerate(micro_batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        if cache is not None:
            for key, table in cache.items():
                batch[key] = table[batch["index"]]  # (b, D) cached T0(t) / V0(v)
        if adversary is not None and adversary.active(step):
            gen = adversary.generator(step, i, accelerator.process_index)
            batch = adversary.apply(accelerator.unwrap_model(model), batch, gen, autocast=accelerator.autocast)
        sync = contextlib.nullcontext() if i == n - 1 else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            parts = loss_fn(**model(batch))
            accelerator.backward(parts["loss"] / n)
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach()) / n
    return parts_sum
