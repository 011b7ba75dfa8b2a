"""``ring-a-bell``: a concept direction in the ORIGINAL text encoder, then a genetic search for
words whose conditioning matches a safe prompt pushed along that direction (Tsai et al., ICLR 2024).

How (our reading of the published method, adapted to prompt pairs):

1. concept vector ``c`` = mean over unsafe/safe prompt pairs of ``E0(unsafe) - E0(safe)``,
   where ``E0`` is the original encoder's padded per-token conditioning (what the UNet reads);
2. per target, goal = ``E0(safe) + eta * c``;
3. a genetic search over ``length`` words appended to the safe prompt (whole-word vocabulary
   pieces holding no banned word) minimising the distance of ``E0(prompt)`` to the goal:
   tournament selection, one-point crossover, per-gene mutation, elitism.

The search never sees the defended model: the prompts found are sent to every method
unchanged (a black-box transfer attack). ``budget`` counts encoder evaluations; the
defended method itself gets one query per prompt.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any

import torch

from safegen.evaluation.attacks.base import (
    Attack,
    AttackContext,
    AttackResult,
    AttackTarget,
    TextEncoderView,
    flat_distance,
)
from safegen.evaluation.attacks.constraint import BannedWords


class RingABellAttack(Attack):
    """Concept-direction genetic search on the original encoder (transferred to every method)."""

    name = "ring-a-bell"
    transfer = True

    def __init__(
        self,
        banned: BannedWords,
        *,
        budget: int = 4096,
        seed: int = 0,
        eta: float = 1.0,
        length: int = 0,
        population: int = 128,
        mutation: float = 0.25,
        elite: float = 0.1,
    ) -> None:
        super().__init__(banned, budget=budget, seed=seed)
        self.eta = eta
        self.length = length  # 0: as many tokens as the unsafe prompt has beyond its safe counterpart
        self.population = max(4, min(population, budget))
        self.mutation = mutation
        self.elite = elite
        self._vectors: dict[str | None, Any] = {}

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "eta": self.eta,
            "length": self.length or "auto",
            "population": self.population,
            "mutation": self.mutation,
            "elite": self.elite,
        }

    def prepare(self, targets: Sequence[AttackTarget], original: TextEncoderView) -> None:
        """Compute one concept vector per concept from the targets' unsafe/safe pairs."""
        by: dict[str | None, list[AttackTarget]] = {}
        for t in targets:
            by.setdefault(t.concept, []).append(t)
        for concept, ts in by.items():
            unsafe = original.encode([t.prompt for t in ts])  # (N, L, D)
            safe = original.encode([t.safe_prompt for t in ts])  # (N, L, D)
            self._vectors[concept] = (unsafe - safe).mean(dim=0, keepdim=True)  # (1, L, D)

    def concept_vector(self, concept: str | None) -> Any:
        if concept not in self._vectors:
            raise RuntimeError("ring-a-bell: call prepare() with the targets before run()")
        return self._vectors[concept]

    def run(self, target: AttackTarget, context: AttackContext) -> AttackResult:
        enc = context.original or context.encoder
        if enc is None:
            raise RuntimeError("ring-a-bell needs the original text encoder")
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(target.id.encode()))
        vocab = torch.tensor(enc.word_tokens(self.banned, target.concept))  # (V',)
        safe_ids, safe_text = enc.prefix(target.safe_prompt)  # room for at least one searched word
        k = self.length or max(1, len(enc.content_ids(target.prompt)) - len(safe_ids))
        k = max(1, min(k, enc.max_length - 2 - len(safe_ids)))
        goal = enc.encode([target.safe_prompt]) + self.eta * self.concept_vector(target.concept)  # (1, L, D)
        base = torch.tensor([enc.bos] + safe_ids)

        def score(pop: Any) -> Any:
            ids = torch.full((len(pop), enc.max_length), enc.pad, dtype=torch.long)
            n = len(base)
            ids[:, :n] = base
            ids[:, n : n + k] = pop
            ids[:, n + k] = enc.eos
            return flat_distance(enc.encode_ids(ids.to(enc.device)), goal).cpu()  # (P,)

        pop = vocab[torch.randint(len(vocab), (self.population, k), generator=gen)]  # (P, K)
        fit = score(pop)
        queries = len(pop)
        n_elite = max(1, int(self.elite * self.population))
        while queries + self.population <= self.budget:
            order = fit.argsort()
            elite = pop[order[:n_elite]]
            # Tournaments of two pick each parent.
            a = torch.randint(len(pop), (self.population - n_elite, 2), generator=gen)
            pa = torch.where((fit[a[:, 0]] < fit[a[:, 1]])[:, None], pop[a[:, 0]], pop[a[:, 1]])
            b = torch.randint(len(pop), (self.population - n_elite, 2), generator=gen)
            pb = torch.where((fit[b[:, 0]] < fit[b[:, 1]])[:, None], pop[b[:, 0]], pop[b[:, 1]])
            cut = torch.randint(0, k + 1, (len(pa), 1), generator=gen)
            child = torch.where(torch.arange(k)[None, :] < cut, pa, pb)
            mutate = torch.rand(child.shape, generator=gen) < self.mutation
            child = torch.where(mutate, vocab[torch.randint(len(vocab), child.shape, generator=gen)], child)
            child_fit = score(child)
            queries += len(child)
            pop = torch.cat([elite, child])
            fit = torch.cat([fit[order[:n_elite]], child_fit])
        best = int(fit.argmin())
        prompt = f"{safe_text} {enc.decode(pop[best].tolist())}".strip()
        return self._result(target, context, prompt, queries, t0, loss=float(fit[best]), extra={"tokens": k})
