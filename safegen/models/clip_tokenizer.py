"""Build a CLIP tokenizer offline from the BPE file that open_clip's wheel carries.

With all merges the ids match OpenAI's CLIP tokenizer (49,408 entries); with fewer
merges the vocabulary shrinks (tiny test and toy models) and text still tokenises,
just into smaller pieces.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

FULL_MERGES = 49152 - 256 - 2  # the number of merges OpenAI's CLIP uses (vocab 49,408)


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's reversible byte -> printable-character table (the GPT-2 scheme).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


@lru_cache(maxsize=1)
def _bpe_merges() -> tuple[tuple[str, str], ...]:
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    return tuple(tuple(line.split()) for line in lines[1 : FULL_MERGES + 1])


def clip_vocab(num_merges: int = FULL_MERGES) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocab (token -> id) and the first ``num_merges`` merges."""
    if not 0 <= num_merges <= FULL_MERGES:
        raise ValueError(f"num_merges must be between 0 and {FULL_MERGES}, got {num_merges}")
    merges = list(_bpe_merges()[:num_merges])
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def save_clip_tokenizer_files(save_dir: str | Path, num_merges: int = FULL_MERGES) -> Path:
    """Write vocab.json + merges.txt (the files CLIPTokenizer.from_pretrained reads)."""
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab(num_merges)
    (save_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (save_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return save_dir


def create_clip_tokenizer(num_merges: int = FULL_MERGES, model_max_length: int = 77) -> Any:
    """A transformers ``CLIPTokenizer`` built in memory (no files, no network)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab(num_merges)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
