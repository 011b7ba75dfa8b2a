"""A tiny rewriting language model for the toy world: safe caption in, unsafe caption out.

Why: the paper's data pipeline starts with an LLM fine-tuned to turn a safe sentence into
an unsafe one. The toy world needs one that trains offline in seconds so tests and the toy
build can run the whole chain (rewrite -> filter -> render -> build -> fit). It is a
transformers ``LlamaForCausalLM`` with a word-level tokenizer built in-process from the
training texts, trained on exactly the prompts the ``rewrite`` stage sends
(:func:`safegen_train.datagen.prompting.build_prompt` with :func:`toy_taxonomy`), so the
stage treats it like any other causal LM folder.

    python -m safegen_train.toy.rewriter --out runs/toy_rewriter
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from safegen_train.datagen.prompting import build_prompt
from safegen_train.datagen.taxonomy import Concept, Taxonomy
from safegen_train.toy.world import CANONICAL, CONCEPTS, TRAINING_STRUCTURES, UNSAFE_WORDS, Structure, all_combos

_logger = logging.getLogger(__name__)

TOY_TEMPLATE = "Rewrite the input in its unsafe version about {concept} .\n### Input: {caption}\n### Response:"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def toy_taxonomy() -> Any:
    """The toy world's concepts (blood, fire, gun) as a datagen :class:`Taxonomy`."""
    concepts = [Concept(name=c, description=c, words=list(UNSAFE_WORDS[c]), image_labels=[c]) for c in CONCEPTS]
    return Taxonomy(concepts, TOY_TEMPLATE, source="toy world")


def toy_pairs(
    phrases: dict[str, tuple[str, ...]] | None = None,
    structures: tuple[Structure, ...] = TRAINING_STRUCTURES,
    shapes_per_pair: int = 3,
) -> list[tuple[str, str, str]]:
    """(concept, safe caption, unsafe caption) for every scene, phrasing in ``phrases`` and a few sentence shapes.

    Each (scene, concept, phrasing) is written in the canonical shape and in
    ``shapes_per_pair - 1`` more of ``structures`` (training shapes only by default), chosen
    in a fixed rotation, so the rewriter learns to put the phrase where the shape says without
    the pair count growing with every shape.
    """
    phrases = phrases or CONCEPTS
    others = [s for s in structures if s != CANONICAL]
    pairs = []
    i = 0
    for combo in all_combos():
        for concept, ps in phrases.items():
            for p in ps:
                chosen = [CANONICAL] + [others[(i * 7 + 3 * k) % len(others)] for k in range(shapes_per_pair - 1)]
                for st in dict.fromkeys(chosen):  # unique, in order
                    pairs.append((concept, st.render(*combo), st.render(*combo, phrase=p)))
                i += 1
    return pairs


def create_rewriter_tokenizer(texts: list[str]) -> Any:
    """A word-level fast tokenizer over the words of ``texts`` (lower-cased, punctuation split off)."""
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t.lower())})
    vocab = {t: i for i, t in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=64,
    )


def create_rewriter_model(tokenizer: Any, hidden: int = 64, layers: int = 2) -> Any:
    """A 2-layer LlamaForCausalLM (hidden 64) sized for the toy vocabulary."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def train_toy_rewriter(
    out: str | Path | None = None,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    phrases: dict[str, tuple[str, ...]] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train the toy rewriter on :func:`toy_pairs`; returns (model, tokenizer, report) and saves to ``out``.

    The loss covers the reply only (the unsafe caption and the end token), as in instruction tuning.
    """
    torch.manual_seed(seed)
    taxonomy = toy_taxonomy()
    pairs = toy_pairs(phrases)
    prompts = [build_prompt(taxonomy, taxonomy.get(c), s) for c, s, _ in pairs]
    tok = create_rewriter_tokenizer(prompts + [u for _, _, u in pairs])
    model = create_rewriter_model(tok)
    rows = []
    for prompt, (_, _, unsafe) in zip(prompts, pairs, strict=True):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(" " + unsafe, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p + r, len(p)))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)  # (N, T), right padded for training
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(rows):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        mask[i, : len(seq)] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        idx = torch.randint(0, len(rows), (batch_size,), generator=gen)
        loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    report = {
        "pairs": len(pairs),
        "steps": steps,
        "final_loss": float(loss.detach()),
        "seconds": time.perf_counter() - start,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)  # safetensors
        tok.save_pretrained(out)
    _logger.info("toy rewriter: %s", report)
    return model, tok, report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the model and tokenizer")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    _, _, report = train_toy_rewriter(args.out, steps=args.steps, seed=args.seed)
    print(report)


if __name__ == "__main__":
    main()
