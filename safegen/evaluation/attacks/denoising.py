"""``unlearndiff`` and ``p4d``: white-box hard-prompt attacks on the diffusion model's own denoising loss.

Both optimise ``length`` adversarial tokens PREPENDED to the safe counterpart of the unsafe
prompt (so the prompt holds no banned word), PEZ-style (Wen et al. 2023): continuous token
embeddings are optimised with Adam, and every forward pass uses their projection onto the
nearest real vocabulary token (cosine similarity), restricted to whole words that hold no
banned word and survive decode -> encode. The gradient taken at the projected embeddings
updates the continuous ones (straight-through), so what is scored is always a real prompt.

The objectives, on latents ``z_t`` of an image of the concept (the target image's VAE
latents, noised at a random timestep ``t`` with noise ``n``):

- ``unlearndiff`` (UnlearnDiffAtk, Zhang et al., ECCV 2024): the DEFENDED model's denoising
  loss, ``|eps_defended(z_t, t, adversarial prompt) - n|^2``: prompts under which the
  defended model reconstructs the unsafe image are prompts it will draw it from;
- ``p4d`` (Chin et al., ICML 2024): match the UNDEFENDED model on the unsafe prompt,
  ``|eps_defended(z_t, t, adversarial prompt) - eps_original(z_t, t, unsafe prompt)|^2``,
  on the same latents, timesteps and noise.

"Defended" is the attacked method's UNet and text encoder (Safe-CLIP: the original UNet with
the Safe-CLIP text encoder; the gradient goes through both). Methods that defend at
sampling time (negative prompt, SLD) have the original's UNet and encoder, so their
optimisation is the original's and only the queries see the defense.

Cost, reported separately: ``budget`` counts QUERIES, one generation by the attacked method
judged by the classifier (as for ``paraphrase``); after every ``steps_per_query`` optimisation
steps (each one UNet forward and backward on ``noise_batch`` noised latents, through the text
encoder) the current hard prompt is queried, and the search stops at the first success. A
prompt already judged is not generated again (the judge is deterministic), so the steps are
at most ``budget * steps_per_query`` and the queries at most ``budget``. The target image is
one extra generation by the ORIGINAL model per prompt (shared by every method and by both
attacks), not a query on the attacked one.

``optimise=False`` is the control: fresh random words of the same length before every
query, no gradient, same budget. On a model that draws the concept from any odd prompt
(the toy world's), the control is the rate an attack must beat.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from safegen.core.errors import UsageError
from safegen.evaluation.attacks.base import Attack, AttackContext, AttackResult, AttackTarget, TextEncoderView
from safegen.evaluation.attacks.constraint import BannedWords

_logger = logging.getLogger(__name__)

LOSS_SCALE_FP16 = 1024.0  # fp16 backward through a UNet underflows at MSE scale; Adam is scale-invariant


class DiffusionView:
    """One method's denoiser seen as a differentiable function: UNet, VAE, training noise schedule, text encoder."""

    def __init__(self, pipe: Any, encoder: TextEncoderView) -> None:
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.encoder = encoder
        # The TRAINING noise schedule (betas), whatever sampler the pipeline uses: the
        # denoising loss is the one the UNet was trained on, not the sampler's discretisation.
        self.noise_schedule = DDPMScheduler.from_config(pipe.scheduler.config)
        self.num_train_timesteps = int(self.noise_schedule.config.num_train_timesteps)
        self.prediction_type = self.noise_schedule.config.get("prediction_type", "epsilon")
        self.vae_scale_factor = int(getattr(pipe, "vae_scale_factor", 8))
        self.image_size = int(self.unet.config.sample_size) * self.vae_scale_factor
        self.image_processor = getattr(pipe, "image_processor", None)

    @property
    def dtype(self) -> Any:
        return self.unet.dtype

    @property
    def device(self) -> Any:
        return self.unet.device

    def encode_image(self, image: Any, width: int | None = None, height: int | None = None) -> Any:
        """A PIL image -> (1, 4, h, w) latents: the VAE posterior mean times the scaling factor."""
        processor = self.image_processor or VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        pixels = processor.preprocess(image, height=height or self.image_size, width=width or self.image_size)
        pixels = pixels.to(device=self.device, dtype=self.vae.dtype)  # (1, 3, H, W) in [-1, 1]
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.mean  # (1, 4, H/f, W/f)
        return (latents * self.vae.config.scaling_factor).to(self.dtype)

    def noised(self, latents: Any, noise: Any, t: Any) -> Any:
        """``z_t`` = sqrt(a_t) z_0 + sqrt(1 - a_t) n, (B, 4, h, w)."""
        return self.noise_schedule.add_noise(latents, noise, t)

    def clean_target(self, latents: Any, noise: Any, t: Any) -> Any:
        """What the UNet should predict at ``z_t``: the noise, or the velocity for v-prediction models."""
        if self.prediction_type == "v_prediction":
            return self.noise_schedule.get_velocity(latents, noise, t)
        return noise

    def predict(self, z_t: Any, t: Any, cond: Any) -> Any:
        """The conditional noise prediction (B, 4, h, w) in float32; ``cond`` is (1 or B, L, D)."""
        cond = cond.to(self.dtype).expand(z_t.shape[0], -1, -1)
        return self.unet(z_t, t.to(self.device), encoder_hidden_states=cond, return_dict=False)[0].float()


class DenoisingAttack(Attack):
    """Shared PEZ loop; subclasses say what the defended prediction must match (:meth:`goal`)."""

    name = "denoising"

    def __init__(
        self,
        banned: BannedWords,
        *,
        budget: int = 8,
        seed: int = 0,
        length: int = 5,
        steps_per_query: int = 10,
        lr: float = 0.01,
        weight_decay: float = 0.1,
        noise_batch: int = 1,
        eval_points: int = 4,
        optimise: bool = True,
    ) -> None:
        super().__init__(banned, budget=budget, seed=seed)
        for knob, value in (("length", length), ("steps_per_query", steps_per_query), ("noise_batch", noise_batch)):
            if int(value) < 1:
                raise UsageError(f"{self.name}.{knob} must be >= 1, got {value}")
        if lr <= 0:
            raise UsageError(f"{self.name}.lr must be > 0, got {lr}")
        self.length = int(length)
        self.steps_per_query = int(steps_per_query)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.noise_batch = int(noise_batch)
        self.eval_points = max(0, int(eval_points))
        # False: the control, fresh random words before every query, same shape and budget, no
        # gradient. The attack's success only means something above this rate.
        self.optimise = bool(optimise) if not isinstance(optimise, str) else optimise.lower() in ("1", "true", "yes")

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "length": self.length,
            "steps_per_query": self.steps_per_query,
            "max_steps": self.budget * self.steps_per_query,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "noise_batch": self.noise_batch,
            "eval_points": self.eval_points,
            "optimise": self.optimise,
            "placement": "prefix",
            "projection": "nearest whole-word token by cosine similarity (PEZ)",
        }

    # ------------------------------------------------------------------ objective

    def prepare_target(self, target: AttackTarget, context: AttackContext) -> dict[str, Any]:
        """Per-target constants of the objective (subclasses add theirs)."""
        return {}

    def goal(self, state: dict[str, Any], context: AttackContext, z0: Any, z_t: Any, t: Any, noise: Any) -> Any:
        """(B, 4, h, w): what the defended prediction must match at ``z_t`` (no gradient)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ search

    def _seed(self, target: AttackTarget) -> int:
        return self.seed * 1_000_003 + zlib.crc32(target.id.encode())

    def run(self, target: AttackTarget, context: AttackContext) -> AttackResult:
        view, enc = context.diffusion, context.encoder
        if view is None or enc is None or context.target_image is None:
            raise RuntimeError(f"{self.name} needs the method's diffusion view, text encoder and target images")
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(self._seed(target))
        image, target_flagged = context.target_image(target)
        z0 = view.encode_image(image)  # (1, 4, h, w)
        state = self.prepare_target(target, context)
        # 1. The prompt template and the allowed words: the search space of this target.
        problem = _PromptProblem(self, target, context, state, z0, gen)
        # 2. A fixed set of (t, noise), drawn once, scores the initial and final prompts alike
        #    (the training draws are random each step, so their losses are noisy).
        problem.draw_eval_points(self.eval_points)
        # 3. Continuous embeddings start at random allowed words (PEZ's initialisation).
        start = torch.randint(len(problem.vocab), (problem.k,), generator=gen).to(enc.device)
        soft = problem.table[start].clone().requires_grad_(True)  # (K, D)
        initial_loss = problem.evaluate(start)
        # 4. Search: optimise, querying the current hard prompt every steps_per_query steps; or,
        #    as the control, fresh random words before every query.
        if self.optimise:
            outcome = self._optimise(problem, soft)
        else:
            outcome = self._random_words(problem, start)
        # 5. The prompt that succeeded, else the one of the lowest loss.
        if outcome.best is None:  # fewer steps than one query's worth: the current projection stands
            rows = problem.project(soft)
            outcome.best = (float("nan"), problem.prompt_of(rows), rows)
        _, prompt, rows = outcome.best
        return self._result(
            target,
            context,
            prompt,
            outcome.queries,
            t0,
            found_success=(outcome.success_prompt is not None) if context.judge is not None else None,
            loss=problem.evaluate(rows),
            extra={
                "tokens": problem.k,
                "opt_steps": outcome.steps,
                "steps_per_query": self.steps_per_query,
                "initial_loss": initial_loss,
                "target_flagged": target_flagged,
                "adversarial_words": enc.decode(problem.vocab[rows].tolist()),
            },
        )

    def _random_words(self, problem: _PromptProblem, start: Any) -> _Outcome:
        """The control: the starting words, then fresh random ones, one query each; no gradient."""
        target, context, gen = problem.target, problem.context, problem.gen
        outcome = _Outcome()
        while outcome.queries < self.budget:
            if outcome.queries == 0:
                rows = start
            else:
                rows = torch.randint(len(problem.vocab), (problem.k,), generator=gen).to(problem.enc.device)
            prompt = problem.prompt_of(rows)
            if outcome.best is None:
                outcome.best = (float("nan"), prompt, rows)
            if context.judge is None:
                break
            outcome.queries += 1
            if context.judge([prompt], [target.seed])[0]:
                outcome.success_prompt, outcome.best = prompt, (float("nan"), prompt, rows)
                break
        return outcome

    def _optimise(self, problem: _PromptProblem, soft: Any) -> _Outcome:
        """PEZ: AdamW on the continuous embeddings through their projections; a query every steps_per_query steps."""
        target, context = problem.target, problem.context
        optimizer = torch.optim.AdamW([soft], lr=self.lr, weight_decay=self.weight_decay)
        scale = LOSS_SCALE_FP16 if problem.view.dtype == torch.float16 else 1.0
        outcome = _Outcome()
        seen: set[str] = set()
        window: list[float] = []
        while outcome.steps < self.budget * self.steps_per_query and outcome.queries < self.budget:
            rows = problem.project(soft)
            hard = problem.table[rows].clone().requires_grad_(True)  # (K, D): the forward sees real tokens only
            t, noise = problem.draw(self.noise_batch)
            loss = problem.objective(rows, hard, t, noise)
            (grad,) = torch.autograd.grad(loss * scale, hard)
            soft.grad = grad.float() / scale  # straight-through: the projected point's gradient moves the soft one
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            outcome.steps += 1
            window.append(float(loss.detach()))
            if outcome.steps % self.steps_per_query:
                continue
            rows = problem.project(soft)
            prompt = problem.prompt_of(rows)
            mean_loss = sum(window) / len(window)
            window = []
            if outcome.best is None or mean_loss < outcome.best[0]:
                outcome.best = (mean_loss, prompt, rows)
            if context.judge is None or prompt in seen:
                continue
            seen.add(prompt)
            outcome.queries += 1
            if context.judge([prompt], [target.seed])[0]:
                outcome.success_prompt, outcome.best = prompt, (mean_loss, prompt, rows)
                break
        return outcome


@dataclass
class _Outcome:
    """Where a search stopped: its best (loss, prompt, rows), the prompt that succeeded, queries and steps."""

    best: tuple[float, str, Any] | None = None
    success_prompt: str | None = None
    queries: int = 0
    steps: int = 0


class _PromptProblem:
    """One target's search space and objective.

    The prompt is ``[bos] + K adversarial words + safe prompt + [eos] + padding``, exactly the ids
    the pipeline reads after tokenizing the final prompt text; the K words come from ``vocab``,
    the whole words that hold no banned word of the target's concept. Random draws (timesteps,
    noise, words) all come from the attack's generator ``gen``, in the order the search makes them.
    """

    def __init__(
        self,
        attack: DenoisingAttack,
        target: AttackTarget,
        context: AttackContext,
        state: dict[str, Any],
        z0: Any,
        gen: torch.Generator,
    ) -> None:
        self.attack, self.target, self.context, self.state, self.z0, self.gen = attack, target, context, state, z0, gen
        self.view, self.enc = context.diffusion, context.encoder
        enc = self.enc
        self.vocab = torch.tensor(enc.word_tokens(attack.banned, target.concept), device=enc.device)  # (V',)
        if len(self.vocab) == 0:
            raise RuntimeError(f"{attack.name}: no vocabulary word is free of the banned words of {target.concept!r}")
        k = self.k = max(1, min(attack.length, enc.max_length - 3))
        safe_ids = enc.content_ids(target.safe_prompt)[: enc.max_length - 2 - k]  # the pipeline truncates alike
        template = torch.full((1, enc.max_length), enc.pad, dtype=torch.long)
        template[0, 0] = enc.bos
        template[0, 1 + k : 1 + k + len(safe_ids)] = torch.tensor(safe_ids, dtype=torch.long)
        template[0, 1 + k + len(safe_ids)] = enc.eos
        self.template = template.to(enc.device)
        self.positions = list(range(1, 1 + k))
        self.table = enc.token_embedding.weight.detach()[self.vocab].float()  # (V', D)
        self.unit = torch.nn.functional.normalize(self.table, dim=-1)  # (V', D)
        self.eval_t = self.eval_noise = None

    def project(self, soft: Any) -> Any:  # (K, D) -> (K,) rows of ``table``
        return (torch.nn.functional.normalize(soft.detach(), dim=-1) @ self.unit.T).argmax(dim=-1)

    def conditioning(self, rows: Any, embeds: Any) -> Any:  # (K,), (K, D) -> (1, L, D)
        ids = self.template.clone()
        ids[0, 1 : 1 + self.k] = self.vocab[rows]
        return self.enc.encode_embeddings(ids, self.positions, embeds)

    def draw(self, n: int) -> tuple[Any, Any]:  # timesteps (n,) and noise (n, 4, h, w) from the attack's generator
        view = self.view
        t = torch.randint(0, view.num_train_timesteps, (n,), generator=self.gen)
        noise = torch.randn((n, *self.z0.shape[1:]), generator=self.gen)
        return t.to(view.device), noise.to(device=view.device, dtype=view.dtype)

    def objective(self, rows: Any, embeds: Any, t: Any, noise: Any) -> Any:  # scalar, float32
        z0, view = self.z0, self.view
        z_t = view.noised(z0.expand(len(t), -1, -1, -1), noise, t)  # (B, 4, h, w)
        with torch.no_grad():
            goal = self.attack.goal(self.state, self.context, z0, z_t, t, noise).float()
        return ((view.predict(z_t, t, self.conditioning(rows, embeds)) - goal) ** 2).mean()

    def draw_eval_points(self, n: int) -> None:
        """The fixed (t, noise) that :meth:`evaluate` scores on (none when ``n`` is 0)."""
        if n:
            self.eval_t, self.eval_noise = self.draw(n)

    def evaluate(self, rows: Any) -> float | None:
        if self.eval_t is None:
            return None
        with torch.no_grad():
            return float(self.objective(rows, self.table[rows], self.eval_t, self.eval_noise))

    def prompt_of(self, rows: Any) -> str:
        return f"{self.enc.decode(self.vocab[rows].tolist())} {self.target.safe_prompt}".strip()


class UnlearnDiffAttack(DenoisingAttack):
    """UnlearnDiffAtk: prompts under which the DEFENDED model denoises the unsafe target image best."""

    name = "unlearndiff"

    def goal(self, state: dict[str, Any], context: AttackContext, z0: Any, z_t: Any, t: Any, noise: Any) -> Any:
        return context.diffusion.clean_target(z0.expand(len(t), -1, -1, -1), noise, t)


class P4DAttack(DenoisingAttack):
    """P4D: prompts under which the defended model predicts the noise the ORIGINAL predicts on the unsafe prompt."""

    name = "p4d"

    def prepare_target(self, target: AttackTarget, context: AttackContext) -> dict[str, Any]:
        original = context.original_diffusion or context.diffusion
        return {"unsafe_cond": original.encoder.encode([target.prompt])}  # (1, L, D)

    def goal(self, state: dict[str, Any], context: AttackContext, z0: Any, z_t: Any, t: Any, noise: Any) -> Any:
        original = context.original_diffusion or context.diffusion
        return original.predict(z_t, t, state["unsafe_cond"])


def load_target_image(folder: str | Path, target_id: str) -> Any:
    """``folder/<id>.png`` (or .jpg/.jpeg/.webp) as RGB, else None."""
    for suffix in (".png", ".jpg", ".jpeg", ".webp"):
        path = Path(folder) / f"{target_id}{suffix}"
        if path.is_file():
            with Image.open(path) as im:
                return im.convert("RGB")
    return None
