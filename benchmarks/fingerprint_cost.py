"""What binding results to their weights costs: content fingerprints vs loading the model.

Every batch, eval, i2t and retrieval run fingerprints its base model and safe encoder (see
safegen/core/fingerprint.py) so that new weights in the same folder never pass for the old ones.
This script measures that cost against loading the same weights, in one process:

- the toy preset (tiny SD + Safe-CLIP shipped with safegen): fingerprint cold (no cache),
  warm (cached by path, size and mtime), and load_t2i_pipeline for the same sources;
- a ~500 MB safetensors checkpoint (a CLIP ViT-L/14 text encoder, the size of SD 1.x's safe
  encoder): fingerprint cold and cached vs ``CLIPTextModel.from_pretrained``, and vs a bare
  read of the file into memory (the least any load does).

    python benchmarks/fingerprint_cost.py [--rounds 9] [--threads 1]

Each group (toy preset; ViT-L/14 tower) runs its load and its fingerprints interleaved in
rounds with the shared method of ``_bench.py``: median, min-max and, per round, the ratio
to loading the same weights. The cold figures read the file from the page cache (it was
just written or loaded), so they measure hashing, not the disk; a first read from a slow
disk costs the same for the load itself.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _bench import header, measure, summarize, table


def seconds(fn):
    """A ``_bench`` call: run ``fn`` once and return its wall time."""

    def call() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (>= 5 for a published figure)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAFEGEN_CACHE"] = str(Path(tmp) / "cache")
        from safegen.core import fingerprint as fp
        from safegen.pipelines.loading import load_t2i_pipeline, resolve_t2i_sources

        def cold(*sources):
            def run():
                fp._memory.clear()
                for s in sources:
                    fp.fingerprint_source(s, use_cache=False)

            return run

        def cached(*sources):
            for s in sources:
                fp.fingerprint_source(s)  # fill the cache once

            def run():
                fp._memory.clear()  # only the on-disk cache: what a new process sees
                for s in sources:
                    fp.fingerprint_source(s)

            return run

        sources = resolve_t2i_sources("toy", None, None)
        toy = (sources.base, sources.safe_encoder)
        toy_mb = sum(f.stat().st_size for s in toy for f in Path(s).rglob("*") if f.is_file()) / (1 << 20)
        load_t2i_pipeline(*toy, device="cpu")  # warm-up: imports and first allocations
        toy_result = measure(
            {
                "load": seconds(lambda: load_t2i_pipeline(*toy, device="cpu")),
                "cold": seconds(cold(*toy)),
                "cached": seconds(cached(*toy)),
            },
            baseline="load",
            rounds=args.rounds,
        )

        # The safe encoder of SD 1.x is a CLIP ViT-L/14 text tower: 123M fp32 parameters, ~470 MiB.
        from safetensors.torch import load_file
        from transformers import CLIPTextConfig, CLIPTextModel

        folder = Path(tmp) / "vit-l-14-text"
        config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        CLIPTextModel(config).save_pretrained(folder)
        big_mb = sum(f.stat().st_size for f in folder.iterdir()) / (1 << 20)
        weights = folder / "model.safetensors"
        big_result = measure(
            {
                "load": seconds(lambda: CLIPTextModel.from_pretrained(folder)),
                "bare read": seconds(lambda: {k: v.clone() for k, v in load_file(str(weights)).items()}),
                "cold": seconds(cold(folder)),
                "cached": seconds(cached(folder)),
            },
            baseline="load",
            rounds=args.rounds,
        )

    print(f"toy preset (SD + Safe-CLIP folders, {toy_mb:.0f} MiB); load = load_t2i_pipeline")
    print(header(toy_result))
    print(table(toy_result, "s", ".4f", ratio_label="x load"))
    print(f"\nCLIP ViT-L/14 text encoder, {big_mb:.0f} MiB safetensors; load = CLIPTextModel.from_pretrained")
    print(header(big_result))
    print(table(big_result, "s", ".4f", ratio_label="x load"))
    vs_read = summarize(big_result.values, "bare read")["cold"]  # per round, like every ratio here
    print(f"cold fingerprint x bare read: {vs_read.ratio:.3f} (rounds {vs_read.ratio_lo:.3f}-{vs_read.ratio_hi:.3f})")
    print(json.dumps({"toy": toy_result.to_json(), "vit_l_text": big_result.to_json()}))


if __name__ == "__main__":
    main()
