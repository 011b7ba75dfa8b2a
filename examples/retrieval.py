"""Text-to-image search over a persistent index, with the original CLIP and with Safe-CLIP.

Builds one index per model in a temporary folder, adds images incrementally, reopens the
index from disk and runs the same text query on both. Offline: the toy preset's CLIPs
when installed (safegen/assets/toy), else random tiny CLIPs built in code.

    python examples/retrieval.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

from safegen import SafeRetriever, get_preset
from safegen.retrieval.retriever import RetrievalIndex
from safegen.testing import tiny_clip_model, tiny_clip_processor

COLORS = ("red", "green", "blue", "yellow", "black", "white")


def retrievers() -> dict[str, SafeRetriever]:
    """{"original": ..., "safe": ...}: toy CLIPs if shipped, else two differently seeded tiny CLIPs."""
    toy = get_preset("toy")
    if Path(toy.clip).is_dir() and Path(toy.safe_encoder).is_dir():
        return {
            "original": SafeRetriever.from_pretrained(toy.clip),
            "safe": SafeRetriever.from_pretrained(toy.safe_encoder),
        }
    print("toy weights not installed: using random tiny CLIPs", file=sys.stderr)
    return {
        name: SafeRetriever(tiny_clip_model(seed=seed), tiny_clip_processor(), model_id=f"tiny-clip-{seed}")
        for name, seed in (("original", 0), ("safe", 1))
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for color in COLORS:
            Image.new("RGB", (64, 64), color).save(root / f"{color}.png")
        files = sorted(root.glob("*.png"))
        for name, retriever in retrievers().items():
            retriever.add_images(files[:3])
            retriever.save(root / f"index-{name}")
            index = RetrievalIndex.load(root / f"index-{name}")  # what a later process would do
            reopened = SafeRetriever(retriever.model, retriever.processor, model_id=retriever.model_id, index=index)
            report = reopened.add_images(files)  # incremental: the first three are skipped
            reopened.save(root / f"index-{name}")
            hits = reopened.search("a photo of something red", k=3)
            print(f"{name}: {report.added} added, {report.skipped} skipped; top 3 for 'a photo of something red':")
            for hit in hits:
                print(f"  {hit.rank}. {Path(hit.source).name:<11} {hit.score:+.3f}")


if __name__ == "__main__":
    main()
