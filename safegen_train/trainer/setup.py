"""Setting a run up once its folder is held: seeds, data, model, batches, reference cache, optimizer.

:func:`set_up` does it in this order, which is also the order of the random draws (LoRA
initialisation first): a changed order would train other weights from the same seed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from safegen.data.quadruples import DataError
from safegen_train.adversarial import ImageAdversary
from safegen_train.config import ConfigError, TrainConfig
from safegen_train.data import (
    Collator,
    PairDataset,
    Record,
    ShardedBatchSampler,
    add_extra_unsafe_texts,
    check_term_coverage,
    load_records,
    term_sample_counts,
)
from safegen_train.losses import SafeCLIPLoss
from safegen_train.model import LoadedCLIP, SafeCLIPModule, create_module, load_clip
from safegen_train.pixel_cache import PreprocessedImages
from safegen_train.sharding import batch_items, gather_in_order, owned_batches
from safegen_train.trainer.state import TrainRun

# The name the training log lines have always carried ("INFO safegen_train.train: ..."), whichever
# trainer module writes them.
_logger = logging.getLogger("safegen_train.train")


def set_up(config: TrainConfig, accelerator: Any) -> tuple[TrainRun, dict[str, int]]:
    """Every part of the run, and the records feeding each loss term (logged with the first step)."""
    world = accelerator.num_processes
    # 1. Seeds and determinism, the same on every process
    set_seed(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # 2. Data, checked before the model loads
    train_records, train_ds, val_ds = load_datasets(config)

    # 3. Model: the base CLIP with its collator and image cache, the trained module, the terms it trains
    loaded, collate, module = load_model(config, train_ds, val_ds)
    term_samples = count_term_samples(config, train_records, train_ds, module)
    adversary = create_adversary(config, loaded, module, train_ds)
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

    # 4. Batches: the global micro-batch cut into one slice per process, steps per epoch and in all
    sampler, loader = create_loader(config, train_ds, collate, accelerator)
    steps_per_epoch = len(train_ds) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    # 5. The frozen references T0(t), V0(v) of every record, computed once (or per step)
    cache = reference_cache(config, module, train_ds, collate, accelerator)

    # 6. Optimizer, and both prepared by accelerate
    optimizer = create_optimizer(module, config)
    model, optimizer = accelerator.prepare(module, optimizer)
    run = TrainRun(
        config=config,
        accelerator=accelerator,
        loaded=loaded,
        module=module,
        model=model,
        optimizer=optimizer,
        loss_fn=loss_fn,
        val_loss_fn=val_loss_fn,
        collate=collate,
        train_ds=train_ds,
        val_ds=val_ds,
        sampler=sampler,
        loader=loader,
        micro_batch=sampler.global_micro_batch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        cache=cache,
        adversary=adversary,
    )
    return run, term_samples


def load_datasets(config: TrainConfig) -> tuple[list[Record], PairDataset, PairDataset | None]:
    """(training records, training dataset, validation dataset or None), with the extra unsafe texts added."""
    read = dict(
        coco_root=config.coco_root,
        unsafe_image_root=config.unsafe_image_root,
        skip_bad=config.skip_bad_records,
        images=config.images,
    )
    train_records = load_records(config.train_data, split=config.train_split, **read)
    if config.extra_unsafe_texts:
        train_records = add_extra_unsafe_texts(
            train_records,
            config.extra_unsafe_texts,
            repeat=config.extra_unsafe_repeat,
            skip_bad=config.skip_bad_records,
        )
    val_records = load_records(config.val_data, split=config.val_split, **read) if config.val_data else None
    train_ds = PairDataset(train_records)
    val_ds = PairDataset(val_records) if val_records else None
    if len(train_ds) < config.batch_size:
        raise DataError(f"{len(train_ds)} training records are fewer than batch_size {config.batch_size}")
    if config.preprocessed_cache and not Path(config.preprocessed_cache).expanduser().is_dir():
        raise DataError(  # said before the model loads; whether it fits the model's processor is checked after
            f"preprocessed_cache '{config.preprocessed_cache}' is not a folder; make it with `safegen-train data "
            f"preprocess DATA --model {config.model} --out {config.preprocessed_cache}` or unset it"
        )
    return train_records, train_ds, val_ds


def load_model(
    config: TrainConfig, train_ds: PairDataset, val_ds: PairDataset | None
) -> tuple[LoadedCLIP, Collator, SafeCLIPModule]:
    """The base CLIP, the collator feeding it (images from the pre-processed cache where one is set) and
    the module to train."""
    loaded = load_clip(config.model, activation=config.activation, tokenizer=config.tokenizer)
    max_len = config.max_text_length or loaded.model.config.text_config.max_position_embeddings
    collate = Collator(loaded.tokenizer, loaded.image_processor, max_len)
    if config.preprocessed_cache and (train_ds.has_safe_image or train_ds.has_unsafe_image):
        use_preprocessed(config.preprocessed_cache, loaded.image_processor, train_ds, val_ds)
    module = create_module(config, loaded, has_images=train_ds.has_safe_image)
    return loaded, collate, module


def count_term_samples(
    config: TrainConfig, records: list[Record], train_ds: PairDataset, module: SafeCLIPModule
) -> dict[str, int]:
    """Records feeding each loss term the module trains; a term with none is refused unless allowed."""
    term_samples = term_sample_counts(records, config.loss, module.towers)
    check_term_coverage(
        term_samples,
        str(config.train_data),
        text_only=config.images == "ignore"
        or config.towers == "text"
        or not (train_ds.has_safe_image or train_ds.has_unsafe_image),
        allow_empty=config.allow_empty_loss_terms,
    )
    _logger.info("samples per loss term: %s", term_samples)
    return term_samples


def create_adversary(
    config: TrainConfig, loaded: LoadedCLIP, module: SafeCLIPModule, train_ds: PairDataset
) -> ImageAdversary | None:
    """The adversarial-image attack the config asks for (None when off); it needs unsafe images and
    the vision tower trained."""
    adversary = ImageAdversary.from_config(config, loaded.image_processor)
    if adversary is not None and ("vision" not in module.towers or not train_ds.has_unsafe_image):
        raise ConfigError(
            f"adversarial_images_eps > 0 needs unsafe images and the vision tower trained; '{config.train_data}' "
            f"{'has no unsafe images' if not train_ds.has_unsafe_image else 'trains the text tower only'} "
            "(set adversarial_images_eps: 0)"
        )
    return adversary


def create_loader(
    config: TrainConfig, train_ds: PairDataset, collate: Collator, accelerator: Any
) -> tuple[ShardedBatchSampler, DataLoader]:
    """The sampler of this process's slices of each global micro-batch, and the loader over it."""
    world = accelerator.num_processes
    micro_global = config.batch_size // config.grad_accum_steps
    if micro_global % world:
        raise ConfigError(f"batch_size / grad_accum_steps = {micro_global} must be divisible by the {world} processes")
    sampler = ShardedBatchSampler(
        len(train_ds), micro_global, rank=accelerator.process_index, world=world, seed=config.seed
    )
    # Own generator: creating a DataLoader iterator must not draw from the global RNG (dropout), or a
    # resumed run, which creates one more iterator, would see different dropout masks.
    loader = DataLoader(
        train_ds,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed),
    )
    return sampler, loader


def reference_cache(
    config: TrainConfig, module: SafeCLIPModule, train_ds: PairDataset, collate: Collator, accelerator: Any
) -> dict[str, torch.Tensor] | None:
    """The cached frozen references of the training set, or None when they are computed per step
    (``cache_reference`` off, or ``reference: detached``)."""
    if not (config.cache_reference and config.reference == "frozen"):
        return None
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
        "cached %d reference embeddings in %.2fs (%d process(es))",
        len(train_ds),
        time.perf_counter() - t0,
        accelerator.num_processes,
    )
    return cache


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
    """The config's optimizer over the trainable parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def use_preprocessed(folder: str, processor: Any, *datasets: PairDataset | None) -> None:
    """Point the datasets at the pre-processed image cache, saying how much of the data it covers."""
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
