"""``adaptive``: a white-box greedy coordinate search (GCG-style) against each method's OWN text encoder.

Goal: find words that, read by the attacked method's encoder, give the conditioning the
ORIGINAL model turns into the concept, ``E0(unsafe prompt)``. For Safe-CLIP this is the
honest attack: it knows the defense and optimises through it.

How: the prompt is the safe counterpart plus ``length`` searched words (whole-word
vocabulary pieces holding no banned word). Each step takes the gradient of
``|E(prompt) - E0(unsafe)|^2`` with respect to the one-hot tokens (Zou et al. 2023's
greedy coordinate gradient; PEZ projects a continuous prompt instead), keeps the ``topk``
most promising words per position, scores ``candidates`` single-word swaps exactly and
moves to the best. ``budget`` counts encoder evaluations (a gradient pass counts one).

Methods whose defense is not in the text encoder (negative prompt, SLD) are attacked
through the original encoder: the search is then the same as against ``original``.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import torch

from safegen.evaluation.attacks.base import Attack, AttackContext, AttackResult, AttackTarget, flat_distance
from safegen.evaluation.attacks.constraint import BannedWords


class AdaptiveAttack(Attack):
    """Greedy coordinate gradient search through the attacked method's text encoder."""

    name = "adaptive"

    def __init__(
        self,
        banned: BannedWords,
        *,
        budget: int = 2048,
        seed: int = 0,
        length: int = 0,
        topk: int = 64,
        candidates: int = 64,
        restarts: int = 1,
    ) -> None:
        super().__init__(banned, budget=budget, seed=seed)
        self.length = length  # 0: as many tokens as the unsafe prompt has beyond its safe counterpart
        self.topk = topk
        self.candidates = max(1, candidates)
        self.restarts = max(1, restarts)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "length": self.length or "auto",
            "topk": self.topk,
            "candidates": self.candidates,
            "restarts": self.restarts,
        }

    def run(self, target: AttackTarget, context: AttackContext) -> AttackResult:
        enc = context.encoder or context.original
        original = context.original or enc
        if enc is None:
            raise RuntimeError("adaptive needs the attacked method's text encoder")
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(target.id.encode()))
        vocab = torch.tensor(enc.word_tokens(self.banned, target.concept))  # (V',)
        allowed = torch.zeros(enc.vocab_size, dtype=torch.bool)
        allowed[vocab] = True
        safe_ids, safe_text = enc.prefix(target.safe_prompt)  # room for at least one searched word
        k = self.length or max(1, len(enc.content_ids(target.prompt)) - len(safe_ids))
        k = max(1, min(k, enc.max_length - 2 - len(safe_ids)))
        goal = original.encode([target.prompt])  # (1, L, D): what the original model draws the concept from
        n = 1 + len(safe_ids)
        positions = list(range(n, n + k))
        template = torch.full((1, enc.max_length), enc.pad, dtype=torch.long)
        template[0, :n] = torch.tensor([enc.bos] + safe_ids)
        template[0, n + k] = enc.eos

        def with_words(words: Any) -> Any:  # (B, K) -> (B, L)
            ids = template.repeat(len(words), 1)
            ids[:, n : n + k] = words
            return ids

        queries = 0
        best_words, best_loss = None, float("inf")
        per_restart = self.budget // self.restarts
        for _ in range(self.restarts):
            spent = 0
            words = vocab[torch.randint(len(vocab), (k,), generator=gen)]  # (K,)
            loss = float(flat_distance(enc.encode_ids(with_words(words[None])), goal)[0])
            spent += 1
            while spent + 1 + min(self.candidates, len(vocab)) <= per_restart:
                onehot = torch.zeros(k, enc.vocab_size)
                onehot[torch.arange(k), words] = 1.0
                onehot.requires_grad_(True)
                dist = flat_distance(enc.encode_onehot(with_words(words[None]), positions, onehot), goal)[0]
                (grad,) = torch.autograd.grad(dist, onehot)  # (K, V)
                spent += 1
                grad = grad.masked_fill(~allowed[None, :], float("inf"))
                top = (-grad).topk(min(self.topk, len(vocab)), dim=1).indices  # (K, topk)
                b = min(self.candidates, len(vocab))
                pos = torch.randint(k, (b,), generator=gen)
                pick = top[pos, torch.randint(top.shape[1], (b,), generator=gen)]
                cand = words[None].repeat(b, 1)
                cand[torch.arange(b), pos] = pick
                losses = flat_distance(enc.encode_ids(with_words(cand)), goal)
                spent += b
                j = int(losses.argmin())
                if float(losses[j]) < loss:
                    words, loss = cand[j], float(losses[j])
            queries += spent
            if loss < best_loss:
                best_words, best_loss = words.clone(), loss
        prompt = f"{safe_text} {enc.decode(best_words.tolist())}".strip()
        return self._result(target, context, prompt, queries, t0, loss=best_loss, extra={"tokens": k})
