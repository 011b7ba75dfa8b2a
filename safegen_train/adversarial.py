"""Adversarial image rounds: PGD-perturbed unsafe images trained on in place of the clean ones.

Why: ``safegen eval attack --images`` (``image-pgd``) perturbs an unsafe image within an
L-infinity ball so that the SAFE vision tower's patch tokens match what the ORIGINAL tower
saw in the clean image; a captioner reading the safe tower then names the concept again.
Training on such images closes the gap the attack finds (adversarial training, Madry et
al. 2018): at chosen steps, a share of each micro-batch's unsafe images is replaced by its
PGD perturbation against the CURRENT trainable tower, with the attack's own objective, and
the unsafe-image loss terms (terms 4 and 8, ``vision_patch_unsafe``) then pull the
perturbed image to the safe twin's reference, as they do for the clean one.

The attack here (:meth:`ImageAdversary.perturb`):

- works in pixel space ``[0, 1]``: the collated tensors are un-normalised with the image
  processor's mean/std, perturbed, clamped and normalised again;
- minimises the mean squared distance between the current tower's patch tokens of
  ``x + delta`` at ``loss.vision_hidden_layer`` (CLS dropped: what LLaVA reads) and the
  reference (original) tower's patch tokens of the clean ``x``, as ``image-pgd`` does;
- starts at a uniform random point of the ball and takes ``steps`` signed-gradient steps of
  ``2.5 * eps / steps`` (so the ball's far side is reachable), each projected on the ball
  and on ``[0, 1]``;
- runs with the model in eval mode (no dropout) and differentiates only ``delta``
  (``torch.autograd.grad``), so no parameter gradient is written;
- draws its random start and the images it picks from a generator seeded by the run's seed,
  the optimizer step, the micro-batch and the process: a run (and a resumed run) reproduces.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from safegen_train.config import ConfigError

#: Madry et al.'s step rule: with ``steps`` steps of ``2.5 * eps / steps`` the ball's far side is reachable.
STEP_SIZE_FACTOR = 2.5


@dataclass
class AdversaryStats:
    """Running sums of the images perturbed and their objective, since the last metrics line."""

    images: int = 0
    objective_before: float = 0.0  # sums over images
    objective_after: float = 0.0

    def add(self, n: int, before: float, after: float) -> None:
        self.images += n
        self.objective_before += before
        self.objective_after += after


@dataclass
class ImageAdversary:
    """PGD on unsafe images against the trained vision tower (see the module docstring)."""

    eps: float
    steps: int
    fraction: float
    every: int
    layer: int
    image_mean: list[float]
    image_std: list[float]
    seed: int = 0
    stats: AdversaryStats = field(default_factory=AdversaryStats)

    @classmethod
    def from_config(cls, config: Any, image_processor: Any) -> ImageAdversary | None:
        """The adversary a :class:`~safegen_train.config.TrainConfig` asks for, or None when off."""
        if not config.adversarial_images_eps:
            return None
        mean = list(getattr(image_processor, "image_mean", None) or [])
        std = list(getattr(image_processor, "image_std", None) or [])
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(
                "adversarial_images_eps needs the image processor's image_mean and image_std (3 values each) "
                "to perturb in pixel space; the model's preprocessor_config.json has none"
            )
        return cls(
            eps=float(config.adversarial_images_eps),
            steps=int(config.adversarial_images_steps),
            fraction=float(config.adversarial_images_fraction),
            every=int(config.adversarial_images_every),
            layer=int(config.loss.vision_hidden_layer),
            image_mean=mean,
            image_std=std,
            seed=int(config.seed),
        )

    def active(self, step: int) -> bool:
        """Whether optimizer step ``step`` (0-based) trains on perturbed images."""
        return step % self.every == 0

    def generator(self, step: int, micro: int, rank: int) -> torch.Generator:
        """A CPU generator for one micro-batch, a pure function of (seed, step, micro-batch, process)."""
        mixed = ((self.seed * 1_000_003 + step) * 8_191 + micro) * 131 + rank
        return torch.Generator().manual_seed(mixed % (2**63 - 1))

    # -- pixels

    def _mean_std(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.image_mean, device=like.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=like.device, dtype=torch.float32).view(1, 3, 1, 1)
        return mean, std

    def to_unit(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixel tensors (B, 3, H, W) -> pixels in [0, 1]."""
        mean, std = self._mean_std(pixels)
        return (pixels.float() * std + mean).clamp(0.0, 1.0)

    def normalise(self, unit: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> the model's normalised input."""
        mean, std = self._mean_std(unit)
        return (unit - mean) / std

    # -- the attack

    def patch_tokens(self, clip: Any, pixels: torch.Tensor) -> torch.Tensor:
        """(B, N, H) patch tokens of ``loss.vision_hidden_layer``, CLS dropped (what image-pgd attacks)."""
        out = clip.vision_model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.layer][:, 1:].float()

    def perturb(
        self, module: Any, pixels: torch.Tensor, generator: torch.Generator, *, autocast: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PGD on normalised ``pixels`` (B, 3, H, W) against ``module``'s trained vision tower.

        Returns the perturbed normalised pixels and the per-image objective (mean squared
        patch-token distance to the reference tower's clean tokens) before (clean image)
        and after the attack, both (B,). ``module`` is a :class:`SafeCLIPModule`; its
        parameters receive no gradient. ``autocast`` (a context-manager factory) wraps the
        tower passes, as the training step's autocast does.
        """
        autocast = autocast or contextlib.nullcontext
        was_training = module.training
        module.eval()  # no dropout while attacking: the attack sees the tower that is evaluated
        try:
            x0 = self.to_unit(pixels)
            with torch.no_grad(), autocast():
                with module.reference_encoders() as ref:
                    goal = self.patch_tokens(ref, pixels)
                clip = module.clip
                before = ((self.patch_tokens(clip, self.normalise(x0)) - goal) ** 2).mean(dim=(1, 2))
            eps = self.eps
            alpha = STEP_SIZE_FACTOR * eps / self.steps
            start = (torch.rand(x0.shape, generator=generator) * 2 - 1) * eps
            delta = ((x0 + start.to(x0.device)).clamp(0, 1) - x0).detach()
            for _ in range(self.steps):
                delta.requires_grad_(True)
                with torch.enable_grad(), autocast():
                    feats = self.patch_tokens(clip, self.normalise(x0 + delta))
                    objective = ((feats - goal) ** 2).mean()
                (grad,) = torch.autograd.grad(objective, delta)  # only delta: no parameter .grad is written
                with torch.no_grad():
                    delta = (delta - alpha * grad.sign()).clamp(-eps, eps)
                    delta = (x0 + delta).clamp(0, 1) - x0
            with torch.no_grad(), autocast():
                adv = self.normalise(x0 + delta)
                after = ((self.patch_tokens(clip, adv) - goal) ** 2).mean(dim=(1, 2))
        finally:
            module.train(was_training)
        return adv.to(pixels.dtype).detach(), before.float(), after.float()

    def apply(
        self, module: Any, batch: dict[str, torch.Tensor], generator: torch.Generator, *, autocast: Any = None
    ) -> dict[str, torch.Tensor]:
        """``batch`` with ``fraction`` of its unsafe images (chosen by ``generator``) replaced by PGD ones.

        The batch's safe images and references are untouched: the perturbed unsafe image is
        pulled to its safe twin's reference by the loss, as the clean one is.
        """
        pixels = batch.get("unsafe_image_pixels")
        if pixels is None or pixels.shape[0] == 0:
            return batch
        n = pixels.shape[0]
        k = max(1, round(self.fraction * n))
        rows = torch.randperm(n, generator=generator)[:k].sort().values.to(pixels.device)
        adv, before, after = self.perturb(module, pixels[rows], generator, autocast=autocast)
        out = dict(batch)
        out["unsafe_image_pixels"] = pixels.index_copy(0, rows, adv)
        self.stats.add(k, float(before.sum()), float(after.sum()))
        return out

    def take_metrics(self, accelerator: Any = None) -> dict[str, float]:
        """Metrics of the images perturbed since the last call (summed over processes), then reset.

        ``adv/images``: images perturbed; ``adv/objective_before`` / ``adv/objective_after``:
        the attack's mean objective on them, clean and perturbed (the attack lowers it).
        """
        s = self.stats
        values = torch.tensor([float(s.images), s.objective_before, s.objective_after], dtype=torch.float64)
        if accelerator is not None and accelerator.num_processes > 1:
            values = accelerator.reduce(values.to(accelerator.device), reduction="sum").cpu()
        self.stats = AdversaryStats()
        n = int(values[0])
        out: dict[str, float] = {"adv/images": n}
        if n:
            out["adv/objective_before"] = float(values[1]) / n
            out["adv/objective_after"] = float(values[2]) / n
        return out
