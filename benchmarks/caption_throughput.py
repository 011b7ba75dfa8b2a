"""Captions per second: batched generation vs one image at a time, same captioner and images.

Uses the tiny LLaVA built in code by default (CPU, seconds), or any LLaVA folder / hub id
with --model. Every caption is forced to the same length (min_new_tokens), so the ratio
measures batching alone, not early stops. Runs are interleaved and the median is kept.

    python benchmarks/caption_throughput.py [--images 16] [--batch-size 8] [--tokens 16] [--model ID]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per caption (forced)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="LLaVA folder or hub id (default: tiny LLaVA built in code)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

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

    modes = {"one at a time": 1, f"batch {args.batch_size}": args.batch_size}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, bs in modes.items():  # interleaved: machine-load drift hits both alike
            t0 = time.perf_counter()
            captioner.caption(images, batch_size=bs, **gen)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)

    print(
        f"{captioner.model_id}, {args.images} images, {args.tokens} new tokens each, device {args.device}, "
        f"threads={torch.get_num_threads()}, median of {args.repeats}"
    )
    base = len(images) / statistics.median(times["one at a time"])
    print(f"{'mode':<14} {'captions/s':>11} {'ratio':>7}")
    for name in modes:
        rate = len(images) / statistics.median(times[name])
        print(f"{name:<14} {rate:11.2f} {rate / base:7.2f}")


if __name__ == "__main__":
    main()
