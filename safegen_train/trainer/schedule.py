"""When the run learns and when it stops: the learning-rate schedule and the early-stopping rule."""

from __future__ import annotations

import math

from safegen_train.config import TrainConfig


class EarlyStopping:
    """The released rule: patience counts down only when *neither* the validation loss
    improved (lower) *nor* the recall-sum improved (higher); any improvement resets it."""

    def __init__(
        self,
        patience: int,
        best_loss: float | None = None,
        best_recall_sum: float | None = None,
        patience_left: int | None = None,
    ) -> None:
        self.patience = patience
        self.best_loss, self.best_recall_sum = best_loss, best_recall_sum
        self.patience_left = patience if patience_left is None else patience_left

    def update(self, loss: float, recall_sum: float | None) -> bool:
        """Record one validation; True when it improved either metric."""
        improved = False
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss, improved = loss, True
        if recall_sum is not None and (self.best_recall_sum is None or recall_sum > self.best_recall_sum):
            self.best_recall_sum, improved = recall_sum, True
        self.patience_left = self.patience if improved else self.patience_left - 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.patience_left <= 0


def lr_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then constant or cosine."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr
