"""Captions per second: batched generation vs one image at a time, same captioner and images.

Uses the tiny LLaVA built in code by default (CPU, seconds), or any LLaVA folder / hub id
with --model. Every caption is forced to the same length (min_new_tokens), so the ratio
measures batching alone, not early stops. The two modes run interleaved in rounds with the
shared method of ``_bench.py`` (median, min-max, per-round ratio with its range).

    python benchmarks/caption_throughput.py [--images 16] [--batch-size 8] [--tokens 16] [--rounds 7] [--threads 1]
    python benchmarks/caption_throughput.py --model ID --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _bench import header, measure, table
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per caption (forced)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (>= 5 for a published figure)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--model", default=None, help="LLaVA folder or hub id (default: tiny LLaVA built in code)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from safegen import SafeLlavaCaptioner
    from safegen.testing import tiny_llava

    if args.model:
        captioner = SafeLlavaCaptioner.from_pretrained(args.model, device=args.device)
    else:
        model, processor = tiny_llava(seed=0)
        captioner = SafeLlavaCaptioner.from_model(model.to(args.device), processor)
    images = [Image.effect_noise((64, 64), 20 + i).convert("RGB") for i in range(args.images)]
    gen = dict(temperature=0.0, max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    captioner.caption(images[:2], batch_size=2, **gen)  # warm-up: first-call allocations and kernel selection

    def rate(batch_size: int):
        def call() -> float:
            t0 = time.perf_counter()
            captioner.caption(images, batch_size=batch_size, **gen)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return len(images) / (time.perf_counter() - t0)

        return call

    calls = {"one at a time": rate(1), f"batch {args.batch_size}": rate(args.batch_size)}
    result = measure(calls, baseline="one at a time", rounds=args.rounds)
    print(f"{captioner.model_id}, {args.images} images, {args.tokens} new tokens each, device {args.device}")
    print(header(result))
    print(table(result, "captions/s", ".2f", ratio_label="x one at a time"))
    print(json.dumps(result.to_json()))


if __name__ == "__main__":
    main()
