"""The training loop: epochs of optimizer steps, each the mean gradient of its micro-batches.

Every process runs the same steps on its slice of each micro-batch; the train metrics lines
carry the loss parts averaged over processes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from safegen.core.terminal import open_progress
from safegen_train.adversarial import ImageAdversary
from safegen_train.losses import SafeCLIPLoss
from safegen_train.trainer.checkpointing import save_run_checkpoint
from safegen_train.trainer.metrics import MetricsLog
from safegen_train.trainer.schedule import lr_at
from safegen_train.trainer.state import TrainRun, TrainState
from safegen_train.trainer.validate import validate


def train_epochs(run: TrainRun, state: TrainState, metrics: MetricsLog) -> None:
    """Train until ``total_steps``, the last epoch or early stopping, validating after each epoch
    unless ``eval_every_steps`` validates by steps."""
    config = run.config
    progress = open_progress("training", total=run.total_steps, done=state.global_step, enabled=run.is_main)
    run.model.train()
    metrics.restart_window()
    while state.global_step < run.total_steps and state.epoch < config.epochs and not state.stopped_early:
        train_one_epoch(run, state, metrics, progress)
        if state.step_in_epoch >= run.steps_per_epoch:  # a full epoch done (not cut by max_steps)
            state.epoch += 1
            state.step_in_epoch = 0
            if not config.eval_every_steps:
                validate(run, state, metrics)
    progress.close()


def train_one_epoch(run: TrainRun, state: TrainState, metrics: MetricsLog, progress: Any) -> None:
    """The optimizer steps left in this epoch (all of them, or those after a resumed step)."""
    config, accum = run.config, run.config.grad_accum_steps
    run.sampler.set_epoch(state.epoch, start=state.step_in_epoch * accum)
    batches = iter(run.loader)
    while (
        state.step_in_epoch < run.steps_per_epoch and state.global_step < run.total_steps and not state.stopped_early
    ):
        # 1. Gradients of the step's micro-batches, then the optimizer step
        micro_batches = [next(batches) for _ in range(accum)]
        parts = accumulate_gradients(
            run.accelerator,
            run.model,
            run.loss_fn,
            micro_batches,
            cache=run.cache,
            adversary=run.adversary,
            step=state.global_step,
        )
        lr = optimizer_step(run, state.global_step)
        state.global_step += 1
        state.step_in_epoch += 1
        metrics.count(config.batch_size)
        progress.advance(1)

        # 2. A metrics line, a validation and a checkpoint when their step comes
        step = state.global_step
        if step % config.log_every == 0 or step == run.total_steps:
            record = log_train_step(run, state, metrics, parts, lr)
            progress.describe(f"training (loss {record['loss']:.4f})")
            metrics.restart_window()
        if config.eval_every_steps and step % config.eval_every_steps == 0:
            validate(run, state, metrics)
        if config.save_every_steps and step % config.save_every_steps == 0:
            save_run_checkpoint(run, state, f"step-{step:08d}")


def optimizer_step(run: TrainRun, step: int) -> float:
    """Clip the gradients (``max_grad_norm``), step at the scheduled learning rate, clear them; returns the rate."""
    config = run.config
    if config.max_grad_norm is not None:
        run.accelerator.clip_grad_norm_(run.model.parameters(), config.max_grad_norm)
    lr = lr_at(step, config, run.total_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return lr


def log_train_step(
    run: TrainRun, state: TrainState, metrics: MetricsLog, parts: dict[str, float], lr: float
) -> dict[str, Any]:
    """Write the train metrics line of this step: loss parts averaged over processes, lr, samples/s,
    the adversarial images' figures and, once, the records per loss term. Returns the line."""
    accelerator = run.accelerator
    names = sorted(parts)
    values = torch.tensor([parts[n] for n in names], device=accelerator.device)
    values = accelerator.reduce(values, reduction="mean") if accelerator.num_processes > 1 else values
    record = {
        "split": "train",
        "step": state.global_step,
        "epoch": state.epoch,
        "lr": lr,
        **{n: float(v) for n, v in zip(names, values.tolist(), strict=True)},
        "samples_per_s": metrics.samples_per_s(),
    }
    if run.adversary is not None:  # images perturbed since the last line and the attack's objective
        adv = run.adversary.take_metrics(accelerator)
        state.adversarial_images += adv["adv/images"]
        record.update(adv, **{"adv/images_total": state.adversarial_images})
    term_samples = metrics.take_term_samples()
    if term_samples is not None:  # once per run (and per resume): records feeding each term
        record["term_samples"] = term_samples
    metrics.write(record)
    return record


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
