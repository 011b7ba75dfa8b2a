"""The Safe-CLIP training loop on accelerate: one process, DDP, multi-node, no code change.

The package, in the order a run goes through it: :mod:`.main` (``fit``, its steps),
:mod:`.start` (accelerator, run folder, resume checkpoint), :mod:`.setup` (data, model,
batches, reference cache, optimizer), :mod:`.state` (``TrainRun``: the parts;
``TrainState``: step, epoch, bests), :mod:`.loop` (``train_one_epoch``), :mod:`.validate`,
:mod:`.schedule` (``lr_at``, ``EarlyStopping``), :mod:`.checkpointing`, :mod:`.metrics`.

Launch: ``safegen-train fit --config cfg.yaml`` (one process), ``accelerate launch -m
safegen_train.cli fit ...`` on GPUs, or ``torchrun --nproc_per_node N -m safegen_train.cli
fit ...`` (CPU/gloo too).

Batches. ``batch_size`` is the *global* batch of one optimizer step, whatever the hardware:
it is cut into ``grad_accum_steps`` micro-batches in time, and each micro-batch into one
slice per process. The data order is a seeded permutation per epoch shared by all
processes, so 1 process with batch 8 and 2 processes with batch 8 see the same samples in
each step.

Gradient accumulation. Each micro-batch loss is divided by ``grad_accum_steps`` and
backpropagated (DDP gradient sync only on the last), so the step uses the *mean* of the
micro-batch gradients and nothing is discarded. The InfoNCE terms see in-batch negatives
per micro-batch (per process unless ``loss.gather_negatives``): accumulation reproduces
the gradient of the per-micro-batch losses, not of one loss over the global batch.

Multi-process. With ``loss.gather_negatives`` the InfoNCE terms use the whole
cross-process micro-batch as negatives and the result equals one process holding the
global micro-batch (LoRA dropout aside: each process draws its own masks). Without it each
process contrasts its own slice only: fewer negatives, a different (local) loss.

Reference embeddings. With ``reference: frozen`` and ``cache_reference`` (the default)
T0(t) and V0(v) are computed once for the whole training set before the first step (each
process computes its share of the batches and the tables are gathered; they never change).
Token-level references for the hidden-state terms are computed per step (too large to cache).
Validation is sharded the same way: each process scores its share of the validation batches.

Run folder. A folder that holds an earlier run is refused unless the run is resumed
(``resume``) or started again (``overwrite``), and one process tree at a time holds it
(:mod:`safegen_train.run_folder`). A resume must train what the run trained: settings that
change the result (data, model, loss, lr, ...) are compared with the checkpoint's config.
"""

from __future__ import annotations

from safegen_train.trainer.checkpointing import check_resume
from safegen_train.trainer.loop import accumulate_gradients, train_one_epoch
from safegen_train.trainer.main import FitResult, fit
from safegen_train.trainer.schedule import EarlyStopping, lr_at
from safegen_train.trainer.setup import compute_reference_cache, create_optimizer, set_up
from safegen_train.trainer.state import TrainRun, TrainState
from safegen_train.trainer.validate import validate

__all__ = [
    "EarlyStopping",
    "FitResult",
    "TrainRun",
    "TrainState",
    "accumulate_gradients",
    "check_resume",
    "compute_reference_cache",
    "create_optimizer",
    "fit",
    "lr_at",
    "set_up",
    "train_one_epoch",
    "validate",
]
