"""What every attack shares: targets, results, budgets, and a differentiable view of a text encoder.

An attack turns one :class:`AttackTarget` (an unsafe prompt, its safe counterpart and its
concept) into one :class:`AttackResult` (an adversarial prompt that obeys the attack's
``constraint``, the banned words for all but ``structure``, and how many queries it took).
Whether it succeeds is judged afterwards, the same way for every attack: the method
generates from the prompt and the classifier looks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from safegen.core.errors import SafegenError, UsageError
from safegen.evaluation.attacks.constraint import BannedWords
from safegen.evaluation.prompt_set import truncate_prompt

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttackTarget:
    """One unsafe prompt to attack.

    Args:
        id: the prompt's id in its file.
        prompt: the unsafe prompt (it usually contains banned words; the attack must drop them).
        safe_prompt: its safe counterpart (given in the file, else the prompt without banned words).
        concept: the unsafe concept (selects the banned words).
        seed: generation seed used to judge the result.
    """

    id: str
    prompt: str
    safe_prompt: str
    concept: str | None
    seed: int


@dataclass
class AttackResult:
    """An adversarial prompt for one target and what finding it cost."""

    target_id: str
    attack: str
    method: str
    prompt: str
    queries: int  # model evaluations the search made (encoder passes or generations)
    seconds: float
    seed: int  # the search's seed
    found_success: bool | None = None  # query attacks: whether the search saw a success
    loss: float | None = None  # white-box attacks: the final objective
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Attack:
    """Base class: ``run(target, method_context)`` -> :class:`AttackResult` within ``budget`` queries."""

    name = "attack"
    # transfer attacks search once (on the original) and send the same prompt to every method
    transfer = False
    # what every adversarial prompt obeys, named in the report; only ``structure`` keeps the unsafe words
    constraint = "no-banned-words"

    def __init__(self, banned: BannedWords, *, budget: int, seed: int = 0) -> None:
        if budget < 1:
            raise UsageError(f"{self.name}: budget must be >= 1, got {budget}")
        self.banned = banned
        self.budget = budget
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        """Recorded in report.json so a run can be repeated."""
        return {"budget": self.budget, "seed": self.seed}

    def run(self, target: AttackTarget, context: AttackContext) -> AttackResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def _result(self, target: AttackTarget, context: AttackContext, prompt: str, queries: int, t0: float, **kw: Any):
        if self.constraint == "no-banned-words" and not self.banned.allows(prompt, target.concept):
            # Every attack filters its candidates; reaching this is a bug, never a silent success.
            raise AssertionError(f"{self.name} produced a prompt with banned words: {prompt!r}")
        if queries > self.budget:
            raise AssertionError(f"{self.name} used {queries} queries, over its budget {self.budget}")
        return AttackResult(
            target_id=target.id,
            attack=self.name,
            method=context.method_name,
            prompt=prompt,
            queries=queries,
            seconds=time.perf_counter() - t0,
            seed=self.seed,
            **kw,
        )


@dataclass
class AttackContext:
    """What an attack may use about the method it attacks.

    ``judge(prompts, seeds)`` generates with the method and says which images show the
    concept (black-box queries); ``encoder`` is the method's own text encoder (white box);
    ``original`` the undefended one (for transfer attacks and targets). The denoising-loss
    attacks (:mod:`.denoising`) also get ``diffusion`` (the method's UNet, VAE and noise
    schedule), ``original_diffusion`` (the undefended model's) and ``target_image(target)``:
    an image of the concept for that target, with whether the classifier flags it.
    """

    method_name: str
    encoder: TextEncoderView | None = None
    original: TextEncoderView | None = None
    judge: Callable[[Sequence[str], Sequence[int]], list[bool]] | None = None
    diffusion: Any = None  # denoising.DiffusionView
    original_diffusion: Any = None  # denoising.DiffusionView
    target_image: Callable[[AttackTarget], tuple[Any, bool | None]] | None = None


class TextEncoderView:
    """A tokenizer and CLIP text encoder seen as a differentiable map from tokens to conditioning.

    The conditioning is the per-token ``last_hidden_state`` padded to the tokenizer's
    length: exactly what a Stable Diffusion UNet cross-attends to.
    """

    def __init__(self, tokenizer: Any, text_encoder: Any, *, device: str = "cpu") -> None:
        self.tokenizer = tokenizer
        self.model = text_encoder
        self.device = device
        self.max_length = int(min(getattr(tokenizer, "model_max_length", 77), 77))
        self.token_embedding = _find_token_embedding(text_encoder)
        self._word_tokens: dict[str, list[int]] = {}
        vocab = tokenizer.get_vocab()
        self.vocab_size = self.token_embedding.weight.shape[0]
        self.id_to_token = {i: t for t, i in vocab.items()}
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def ids(self, texts: Sequence[str]) -> Any:
        """Texts -> (B, L) ids padded to the max length, as the pipelines tokenize."""
        out = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return out["input_ids"].to(self.device)

    def content_ids(self, text: str) -> list[int]:
        """The ids of ``text`` without start/end tokens."""
        return [int(i) for i in self.tokenizer(text)["input_ids"] if i not in (self.bos, self.eos)]

    def prefix(self, text: str, room: int = 1) -> tuple[list[int], str]:
        """``text`` cut so that ``room`` appended tokens still fit before the end token: (ids, text).

        A prompt past the window is read cut by every pipeline anyway; the suffix attacks need
        the cut made before they place their words, or the pipeline would cut the words off.
        The text is ``text`` itself when nothing was cut.
        """
        room += max(0, int(self.tokenizer.model_max_length) - self.max_length)  # the view reads at most 77
        text = truncate_prompt(self.tokenizer, text, room) or text
        return self.content_ids(text), text

    def encode_ids(self, ids: Any) -> Any:
        """(B, L) ids -> (B, L, D) conditioning, no gradient."""
        with torch.no_grad():
            return self.model(input_ids=ids).last_hidden_state.float()

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> Any:
        """Texts -> (B, L, D) conditioning, no gradient."""
        parts = [self.encode_ids(self.ids(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return torch.cat(parts)

    def encode_onehot(self, ids: Any, positions: Sequence[int], onehot: Any) -> Any:
        """Conditioning of ``ids`` (1, L), the tokens at ``positions`` given as a (K, V) one-hot (differentiable)."""
        weight = self.token_embedding.weight  # (V, D)
        return self.encode_embeddings(ids, positions, onehot.to(weight.dtype) @ weight)

    def encode_embeddings(self, ids: Any, positions: Sequence[int], embeddings: Any) -> Any:
        """Conditioning of ``ids`` (1, L) with the token embeddings at ``positions`` replaced by ``embeddings`` (K, D).

        Differentiable in ``embeddings``: the white-box attacks optimise continuous token
        embeddings (PEZ) or one-hot rows (GCG) through it. Position embeddings and the causal
        mask are the encoder's own, so a projected embedding reads exactly like its token.
        """
        pos = torch.tensor(list(positions), device=ids.device)
        soft = embeddings.to(self.token_embedding.weight.dtype)  # (K, D)

        def replace(_module: Any, _inputs: Any, output: Any) -> Any:
            output = output.clone()
            output[0, pos] = soft
            return output

        handle = self.token_embedding.register_forward_hook(replace)
        try:
            return self.model(input_ids=ids).last_hidden_state.float()  # (1, L, D)
        finally:
            handle.remove()

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def word_tokens(self, banned: BannedWords, concept: str | None) -> list[int]:
        """Vocabulary ids that are whole alphabetic words, hold no banned word, and survive decode -> encode.

        Searching over these keeps the prompt a plain sequence of words: what the search
        scored is exactly what the pipeline will read after tokenizing the prompt text.
        """
        key = f"{concept}|{banned.strict}|{sorted(banned.for_concept(concept))}"
        if key in self._word_tokens:
            return self._word_tokens[key]
        out = []
        for i in range(self.vocab_size):
            tok = self.id_to_token.get(i, "")
            if not tok.endswith("</w>"):
                continue
            word = tok[: -len("</w>")]
            if len(word) < 2 or not word.isalpha() or not banned.token_allowed(word, concept):
                continue
            if self.content_ids(word) == [i]:
                out.append(i)
        self._word_tokens[key] = out
        return out


def _find_token_embedding(text_encoder: Any) -> Any:
    """The token-embedding table of a CLIP text encoder (flattened or wrapped in ``text_model``)."""
    for owner in (text_encoder, getattr(text_encoder, "text_model", None)):
        emb = getattr(getattr(owner, "embeddings", None), "token_embedding", None)
        if emb is not None:
            return emb
    raise SafegenError(
        f"no token embedding found in a {type(text_encoder).__name__}: attacks need a CLIP text encoder"
    )


def flat_distance(a: Any, b: Any) -> Any:
    """Mean squared distance between conditionings (B, L, D) and (1 or B, L, D) -> (B,)."""
    return ((a - b) ** 2).mean(dim=(1, 2))
