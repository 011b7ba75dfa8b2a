"""Work split across training processes, put back together in dataset order.

Passes over a whole dataset that every process needs the result of (the frozen reference
embeddings, the validation loss and retrieval embeddings) are cut into the same batches one
process would use; process ``rank`` computes batches ``rank, rank + world, ...`` and the rows
are gathered back into dataset order. The batches are those of a single process, so the
result is the one a single process computes, in 1/world of the time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate.utils import broadcast_object_list


def owned_batches(num_items: int, batch_size: int, rank: int = 0, world: int = 1) -> list[int]:
    """Indices of the batches (of ``batch_size`` consecutive items) that process ``rank`` computes."""
    return list(range(rank, math.ceil(num_items / batch_size), world))


def batch_items(batch: int, num_items: int, batch_size: int) -> range:
    """The item indices of one batch (the last batch may be short)."""
    return range(batch * batch_size, min((batch + 1) * batch_size, num_items))


def gather_in_order(
    accelerator: Any, local: dict[str, torch.Tensor], num_items: int, batch_size: int
) -> dict[str, torch.Tensor]:
    """Tables of every process's :func:`owned_batches` rows -> full tables (num_items, ...) in item order.

    ``local[key]`` holds this process's rows, its batches concatenated in order. A process
    may own no batch at all (fewer batches than processes): the keys, trailing shapes and
    dtypes come from process 0, which always owns batch 0. Every process gets the full tables.
    """
    world = accelerator.num_processes
    if world == 1:
        return local
    layout = [[(k, tuple(v.shape[1:]), str(v.dtype).removeprefix("torch.")) for k, v in sorted(local.items())]]
    broadcast_object_list(layout, from_process=0)
    n_batches = math.ceil(num_items / batch_size)
    rows_per_process = math.ceil(n_batches / world) * batch_size  # equal shapes for the collective
    out = {}
    for key, tail, dtype in layout[0]:
        mine = local.get(key)
        if mine is None:
            mine = torch.zeros((0, *tail), dtype=getattr(torch, dtype))
        padded = torch.zeros((rows_per_process, *tail), dtype=mine.dtype, device=accelerator.device)
        padded[: mine.shape[0]] = mine.to(accelerator.device)
        everything = accelerator.gather(padded).cpu()  # (world * rows_per_process, ...)
        pieces = []
        for b in range(n_batches):
            owner, slot = b % world, b // world
            start = owner * rows_per_process + slot * batch_size
            pieces.append(everything[start : start + len(batch_items(b, num_items, batch_size))])
        out[key] = torch.cat(pieces)
    return out
