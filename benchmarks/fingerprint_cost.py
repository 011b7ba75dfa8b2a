"""What binding results to their weights costs: content fingerprints vs loading the model.

Every batch, eval, i2t and retrieval run fingerprints its base model and safe encoder (see
safegen/fingerprint.py) so that new weights in the same folder never pass for the old ones.
This script measures that cost against loading the same weights, in one process:

- the toy preset (tiny SD + Safe-CLIP shipped with safegen): fingerprint cold (no cache),
  warm (cached by path, size and mtime), and load_t2i_pipeline for the same sources;
- a ~500 MB safetensors checkpoint (a CLIP ViT-L/14 text encoder, the size of SD 1.x's safe
  encoder): fingerprint cold and cached vs ``CLIPTextModel.from_pretrained``, and vs a bare
  read of the file into memory (the least any load does).

    python benchmarks/fingerprint_cost.py [--repeats 3]

The cold figures read the file from the page cache (it was just written or loaded), so
they measure hashing, not the disk; a first read from a slow disk costs the same for the
load itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAFEGEN_CACHE"] = str(Path(tmp) / "cache")
        from safegen import fingerprint as fp
        from safegen.loading import load_t2i_pipeline, resolve_t2i_sources

        def cold(source):
            def run():
                fp._memory.clear()
                fp.fingerprint_source(source, use_cache=False)

            return run

        def warm(source):
            fp.fingerprint_source(source)  # fill the cache once

            def run():
                fp._memory.clear()  # only the on-disk cache: what a new process sees
                fp.fingerprint_source(source)

            return run

        rows = []
        sources = resolve_t2i_sources("toy", None, None)
        toy = (sources.base, sources.safe_encoder)
        load = _median(lambda: load_t2i_pipeline(*toy, device="cpu"), args.repeats)
        toy_cold = sum(_median(cold(s), args.repeats) for s in toy)
        toy_warm = sum(_median(warm(s), args.repeats) for s in toy)
        rows.append(("toy preset (SD + Safe-CLIP folders)", toy_cold, toy_warm, load))
        from safetensors.torch import load_file

        # The safe encoder of SD 1.x is a CLIP ViT-L/14 text tower: 123M fp32 parameters, ~470 MiB.
        from transformers import CLIPTextConfig, CLIPTextModel

        folder = Path(tmp) / "vit-l-14-text"
        config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        CLIPTextModel(config).save_pretrained(folder)
        size_mb = sum(f.stat().st_size for f in folder.iterdir()) / (1 << 20)
        big_load = _median(lambda: CLIPTextModel.from_pretrained(folder), args.repeats)
        big_cold = _median(cold(folder), args.repeats)
        big_warm = _median(warm(folder), args.repeats)
        rows.append((f"ViT-L/14 text encoder, {size_mb:.0f} MiB", big_cold, big_warm, big_load))
        weights = folder / "model.safetensors"
        read = _median(lambda: {k: v.clone() for k, v in load_file(str(weights)).items()}, args.repeats)
        rows.append(("  same file: bare read into memory", big_cold, big_warm, read))

    print(f"{'weights':38} {'cold s':>8} {'cached s':>9} {'load s':>8} {'cold/load':>10} {'cached/load':>12}")
    for name, c, w, ld in rows:
        print(f"{name:38} {c:8.4f} {w:9.5f} {ld:8.4f} {c / ld:10.3f} {w / ld:12.5f}")


if __name__ == "__main__":
    main()
