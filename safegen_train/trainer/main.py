"""``fit``: a Safe-CLIP run from its config to its checkpoints, metrics and exported model."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from safegen.core.errors import SafegenError
from safegen_train.adversarial import ImageAdversary
from safegen_train.checkpoint import (
    CheckpointError,
    copy_checkpoint,
    load_resume_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from safegen_train.config import ConfigError, TrainConfig
from safegen_train.data import (
    Collator,
    PairDataset,
    ShardedBatchSampler,
    add_extra_unsafe_texts,
    check_term_coverage,
    load_records,
    term_sample_counts,
)
from safegen_train.io import append_line, atomic_write_text
from safegen_train.losses import SafeCLIPLoss
from safegen_train.model import SafeCLIPModule, create_module, load_clip
from safegen_train.sharding import gather_in_order
from safegen_train.trainer.checkpointing import _rng_state, _set_rng_state, _truncate_metrics, check_resume
from safegen_train.trainer.loop import accumulate_gradients
from safegen_train.trainer.schedule import EarlyStopping, lr_at
from safegen_train.trainer.setup import _agree, _use_preprocessed, compute_reference_cache, create_optimizer
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


@dataclass
class FitResult:
    """What a finished ``fit`` leaves behind."""

    output_dir: Path
    global_step: int
    stopped_early: bool
    last_validation: dict[str, Any] | None
    best_checkpoint: Path | None
    export_dir: Path | None
    module: SafeCLIPModule | None = field(default=None, repr=False)


def fit(
    config: TrainConfig,
    *,
    accelerator: Any = None,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
) -> FitResult:
    """Train a Safe-CLIP as ``config`` says; returns where everything went.

    ``overwrite`` starts again in a folder that holds an earlier run (removing only that run's
    files); ``overrides`` (the ``--set`` values and flags given at the start) are recorded in
    every checkpoint so that ``--resume latest`` can apply them again.
    """
    from accelerate import Accelerator

    from safegen.core.output_folder import claim_output_folder
    from safegen_train.export_folder import check_export_target
    from safegen_train.run_folder import FIT_COMMAND, RunLock, check_output_dir, clear_previous_run

    config.require_sources()
    out_dir = Path(config.output_dir)
    if accelerator is None:
        kwargs = dict(
            cpu=config.cpu,
            mixed_precision=config.mixed_precision,
            log_with=config.report_to or None,
            project_dir=str(out_dir),
        )
        try:
            accelerator = Accelerator(**kwargs)
        except ValueError as exc:  # accelerate keeps one state per process; a second fit may change precision
            if "already been initialized" not in str(exc):
                raise
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state()  # the process-group (PartialState) is kept
            accelerator = Accelerator(**kwargs)

    # ---- the run folder and the checkpoint to resume, before any data or model is loaded
    lock, problem = None, None
    if accelerator.is_main_process:
        try:
            check_output_dir(out_dir, resume=config.resume, overwrite=overwrite)
            lock = RunLock(out_dir)
            lock.acquire()
            claim_output_folder(out_dir, FIT_COMMAND, flag="--output-dir")  # removed with the lock if unused
            if overwrite:
                removed = clear_previous_run(out_dir)
                if removed:
                    _logger.warning("overwrite: removed the earlier run's %s from '%s'", ", ".join(removed), out_dir)
            if config.export_on_finish:
                check_export_target(out_dir / "model")  # refused now, not after training
        except SafegenError as exc:
            problem = exc
    try:
        _agree(accelerator, problem)
        resumed = None
        if config.resume:
            try:
                resumed = load_resume_checkpoint(config.resume, out_dir)
                if resumed is not None:
                    check_resume(resumed[1]["config"], config, resumed[0])
            except SafegenError as exc:
                problem = exc
            _agree(accelerator, problem)
            if resumed is None:
                _logger.warning("resume: latest asked for but '%s' has no checkpoint; starting fresh", out_dir)
        return _train(config, accelerator, resumed, overrides or {})
    finally:
        if lock is not None:
            lock.release()


def _train(
    config: TrainConfig,
    accelerator: Any,
    resumed: tuple[Path, dict[str, Any]] | None,
    overrides: dict[str, Any],
) -> FitResult:
    """The training proper, once the run folder is held and the resume checkpoint is read."""
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    out_dir = Path(config.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    is_main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    set_seed(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # ---- data
    images = config.images
    train_records = load_records(
        config.train_data,
        split=config.train_split,
        coco_root=config.coco_root,
        unsafe_image_root=config.unsafe_image_root,
        skip_bad=config.skip_bad_records,
        images=images,
    )
    if config.extra_unsafe_texts:
        train_records = add_extra_unsafe_texts(
            train_records,
            config.extra_unsafe_texts,
            repeat=config.extra_unsafe_repeat,
            skip_bad=config.skip_bad_records,
        )
    val_records = None
    if config.val_data:
        val_records = load_records(
            config.val_data,
            split=config.val_split,
            coco_root=config.coco_root,
            unsafe_image_root=config.unsafe_image_root,
            skip_bad=config.skip_bad_records,
            images=images,
        )
    train_ds = PairDataset(train_records)
    val_ds = PairDataset(val_records) if val_records else None
    if len(train_ds) < config.batch_size:
        from safegen_train.errors import DataError

        raise DataError(f"{len(train_ds)} training records are fewer than batch_size {config.batch_size}")
    if config.preprocessed_cache and not Path(config.preprocessed_cache).expanduser().is_dir():
        from safegen_train.errors import DataError

        raise DataError(  # said before the model loads; whether it fits the model's processor is checked after
            f"preprocessed_cache '{config.preprocessed_cache}' is not a folder; make it with `safegen-train data "
            f"preprocess DATA --model {config.model} --out {config.preprocessed_cache}` or unset it"
        )

    # ---- model
    loaded = load_clip(config.model, activation=config.activation, tokenizer=config.tokenizer)
    max_len = config.max_text_length or loaded.model.config.text_config.max_position_embeddings
    collate = Collator(loaded.tokenizer, loaded.image_processor, max_len)
    if config.preprocessed_cache and (train_ds.has_safe_image or train_ds.has_unsafe_image):
        _use_preprocessed(config.preprocessed_cache, loaded.image_processor, train_ds, val_ds)
    module = create_module(config, loaded, has_images=train_ds.has_safe_image)
    term_samples = term_sample_counts(train_records, config.loss, module.towers)
    check_term_coverage(
        term_samples,
        str(config.train_data),
        text_only=config.images == "ignore"
        or config.towers == "text"
        or not (train_ds.has_safe_image or train_ds.has_unsafe_image),
        allow_empty=config.allow_empty_loss_terms,
    )
    _logger.info("samples per loss term: %s", term_samples)
    adversary = ImageAdversary.from_config(config, loaded.image_processor)
    if adversary is not None and ("vision" not in module.towers or not train_ds.has_unsafe_image):
        raise ConfigError(
            f"adversarial_images_eps > 0 needs unsafe images and the vision tower trained; '{config.train_data}' "
            f"{'has no unsafe images' if not train_ds.has_unsafe_image else 'trains the text tower only'} "
            "(set adversarial_images_eps: 0)"
        )
    module.to(accelerator.device)
    loss_fn = SafeCLIPLoss(config.loss)
    val_loss_fn = SafeCLIPLoss(config.loss, gather_negatives=False)
    n_trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    _logger.info(
        "training %s (%s, towers %s): %d trainable parameters, %d records, %d processes",
        config.model,
        config.finetune,
        module.towers,
        n_trainable,
        len(train_ds),
        world,
    )

    micro_global = config.batch_size // config.grad_accum_steps
    if micro_global % world:
        raise ConfigError(f"batch_size / grad_accum_steps = {micro_global} must be divisible by the {world} processes")
    sampler = ShardedBatchSampler(len(train_ds), micro_global, rank=rank, world=world, seed=config.seed)
    # Own generator: creating a DataLoader iterator must not draw from the global RNG (dropout), or a
    # resumed run, which creates one more iterator, would see different dropout masks.
    loader = DataLoader(
        train_ds,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed),
    )
    steps_per_epoch = len(train_ds) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    cache = None
    if config.cache_reference and config.reference == "frozen":
        t0 = time.perf_counter()
        cache = compute_reference_cache(
            module,
            train_ds,
            collate,
            batch_size=config.embed_batch_size,
            device=accelerator.device,
            accelerator=accelerator,
        )
        _logger.info(
            "cached %d reference embeddings in %.2fs (%d process(es))", len(train_ds), time.perf_counter() - t0, world
        )

    optimizer = create_optimizer(module, config)
    model, optimizer = accelerator.prepare(module, optimizer)

    # ---- state (fresh or resumed)
    state: dict[str, Any] = {
        "global_step": 0,
        "epoch": 0,
        "step_in_epoch": 0,
        "best_val_loss": None,
        "best_recall_sum": None,
        "patience_left": config.patience,
        "stopped_early": False,
        "last_validation": None,
        "best_checkpoint": None,
        "overrides": overrides,
    }
    if resumed is not None:
        resume_dir, ckpt = resumed
        try:
            module.load_trainable_state_dict(ckpt["trainable"])
            if ckpt["optimizer"] is not None:
                optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint '{resume_dir}' does not fit this model ({str(exc).splitlines()[0][:200]})"
            ) from exc
        state.update(ckpt["state"])
        if ckpt["rng"] is not None:
            _set_rng_state(accelerator, ckpt["rng"])
        _logger.info("resumed from %s at step %d", resume_dir, state["global_step"])

    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.json")
    if config.report_to:
        accelerator.init_trackers("safegen_train", config={k: str(v) for k, v in config.to_dict().items()})
    metrics_path = out_dir / "metrics.jsonl"
    if config.resume and is_main:  # also when 'latest' found no checkpoint: the run starts at step 0
        _truncate_metrics(metrics_path, state["global_step"])

    def log(record: dict[str, Any]) -> None:
        if is_main:
            append_line(metrics_path, json.dumps(record))
            if config.report_to:
                accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    def save(name: str) -> Path | None:
        rng = _rng_state(accelerator)  # every process takes part in the gather
        folder = ckpt_dir / name
        if is_main:
            save_checkpoint(
                folder,
                trainable=module.trainable_state_dict(),
                optimizer_state=optimizer.state_dict(),
                rng_states=rng,
                state=state,
                config=config,
            )
            if name.startswith("step-"):
                prune_checkpoints(ckpt_dir, config.keep_checkpoints)
        accelerator.wait_for_everyone()
        return folder

    def run_validation() -> None:
        if val_ds is None:
            return
        t0 = time.perf_counter()
        unwrapped = accelerator.unwrap_model(model)
        # each process scores its share of the batches; the gathered results equal one process's
        shard = dict(device=accelerator.device, rank=rank, world=world)
        per_batch = validation_loss_per_batch(
            unwrapped, val_loss_fn, val_ds, collate, batch_size=micro_global, **shard
        )
        n_loss_batches = math.ceil(len(val_ds) / micro_global)
        losses = mean_of_batches(gather_in_order(accelerator, per_batch, n_loss_batches, 1))
        unwrapped.eval()
        size = config.embed_batch_size
        embeddings = embed_dataset(unwrapped.clip, val_ds, collate, batch_size=size, **shard)
        table = retrieval_table(gather_in_order(accelerator, embeddings, len(val_ds), size))
        unwrapped.train()
        _logger.info("validated %d records in %.2fs (%d process(es))", len(val_ds), time.perf_counter() - t0, world)
        rsum = recall_sum(table)
        stopper = EarlyStopping(
            config.patience, state["best_val_loss"], state["best_recall_sum"], state["patience_left"]
        )
        before = (state["best_val_loss"], state["best_recall_sum"])
        improved = stopper.update(losses["loss"], rsum)
        state["best_val_loss"], state["best_recall_sum"] = stopper.best_loss, stopper.best_recall_sum
        state["patience_left"] = stopper.patience_left
        state["last_validation"] = {
            "loss": losses,
            "recall": {
                g: {d: {str(k): v for k, v in r.items()} for d, r in dirs.items()} for g, dirs in table.items()
            },
            "recall_sum": rsum,
        }
        log(
            {
                "split": "val",
                "step": state["global_step"],
                "epoch": state["epoch"],
                **{f"val/{k}": v for k, v in losses.items()},
                **{f"val/{k}": v for k, v in flatten_table(table).items()},
                "val/recall_sum": rsum,
                "improved": improved,
                "patience_left": state["patience_left"],
            }
        )
        if improved:
            # The release keeps two bests: lowest validation loss and highest recall-sum. "best" is the
            # latest of either; best-loss / best-recall are copies, selectable at export (export_best).
            which = [
                n
                for n, old, new in (
                    ("loss", before[0], stopper.best_loss),
                    ("recall", before[1], stopper.best_recall_sum),
                )
                if new != old
            ]
            for name in which:
                state[f"best_{name}_checkpoint"] = str(ckpt_dir / f"best-{name}")
            state["best_checkpoint"] = str(save("best"))
            if is_main:
                for name in which:
                    copy_checkpoint(ckpt_dir / "best", ckpt_dir / f"best-{name}")
        if stopper.should_stop:
            state["stopped_early"] = True
            _logger.info(
                "early stopping at step %d: %d validations without improvement", state["global_step"], config.patience
            )

    # ---- the loop
    from safegen.core.terminal import open_progress

    progress = open_progress("training", total=total_steps, done=state["global_step"], enabled=is_main)
    accum = config.grad_accum_steps
    model.train()
    window_t, window_samples = time.perf_counter(), 0
    while state["global_step"] < total_steps and state["epoch"] < config.epochs and not state["stopped_early"]:
        sampler.set_epoch(state["epoch"], start=state["step_in_epoch"] * accum)
        batches = iter(loader)
        while (
            state["step_in_epoch"] < steps_per_epoch
            and state["global_step"] < total_steps
            and not state["stopped_early"]
        ):
            micro_batches = [next(batches) for _ in range(accum)]
            step_parts = accumulate_gradients(
                accelerator, model, loss_fn, micro_batches, cache=cache, adversary=adversary, step=state["global_step"]
            )
            if config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            lr = lr_at(state["global_step"], config, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            window_samples += config.batch_size
            progress.advance(1)

            step = state["global_step"]
            if step % config.log_every == 0 or step == total_steps:
                names = sorted(step_parts)
                values = torch.tensor([step_parts[n] for n in names], device=accelerator.device)
                values = accelerator.reduce(values, reduction="mean") if world > 1 else values
                elapsed = time.perf_counter() - window_t
                record = {
                    "split": "train",
                    "step": step,
                    "epoch": state["epoch"],
                    "lr": lr,
                    **{n: float(v) for n, v in zip(names, values.tolist(), strict=True)},
                    "samples_per_s": window_samples / max(elapsed, 1e-9),
                }
                if adversary is not None:  # images perturbed since the last line and the attack's objective
                    adv = adversary.take_metrics(accelerator)
                    state["adversarial_images"] = state.get("adversarial_images", 0) + adv["adv/images"]
                    record.update(adv, **{"adv/images_total": state["adversarial_images"]})
                if term_samples is not None:  # once per run (and per resume): records feeding each term
                    record["term_samples"], term_samples = term_samples, None
                log(record)
                progress.describe(f"training (loss {record['loss']:.4f})")
                window_t, window_samples = time.perf_counter(), 0
            if config.eval_every_steps and step % config.eval_every_steps == 0:
                run_validation()
            if config.save_every_steps and step % config.save_every_steps == 0:
                save(f"step-{step:08d}")
        if state["step_in_epoch"] >= steps_per_epoch:  # a full epoch done (not cut by max_steps)
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            if not config.eval_every_steps:
                run_validation()
    progress.close()

    final = ckpt_dir / f"step-{state['global_step']:08d}"
    if not (final / "state.json").is_file():
        save(final.name)
    export_dir = None
    if config.export_on_finish and is_main:
        from safegen_train.export import export_module

        key = {"latest": "best_checkpoint", "loss": "best_loss_checkpoint", "recall": "best_recall_checkpoint"}
        best = state.get(key[config.export_best])
        validation, step = state.get("last_validation"), state["global_step"]
        if best and Path(best, "trainable.safetensors").is_file():
            from safetensors.torch import load_file

            module.load_trainable_state_dict(load_file(str(Path(best) / "trainable.safetensors")))
            # The card reports the exported checkpoint's own validation, not the run's last one.
            saved = json.loads(Path(best, "state.json").read_text())
            validation, step = saved.get("last_validation"), saved.get("global_step", step)
        export_dir = export_module(
            module,
            out_dir / "model",
            config=config,
            loaded=loaded,
            validation=validation,
            step=step,
            source_checkpoint=best or str(final),
        )
    accelerator.wait_for_everyone()
    if config.report_to:
        accelerator.end_training()
    if is_main:
        atomic_write_text(out_dir / "state.json", json.dumps(state, indent=2))
    return FitResult(
        out_dir,
        state["global_step"],
        state["stopped_early"],
        state.get("last_validation"),
        Path(best) if (best := state.get("best_checkpoint")) else None,
        export_dir,
        module,
    )
