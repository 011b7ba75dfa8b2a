"""Throughput of `safegen batch` against the naive loop research repos use.

The naive loop calls plain diffusers once per prompt and saves each PNG inline (what
most evaluation scripts do over a CSV). The runner batches rows, encodes each prompt
once, and writes PNGs + manifest on a writer thread while the next batch is generated.

Prints images/s at batch sizes 1, 4 and 8, the ratio to the naive loop, and the share
of wall time spent writing files (for the runner: time generation had to wait for the
writer, plus the writer's overlapped busy time for reference).

Targets (issue 3): batch 8 >= 1.3x the naive loop; file writing < 10% of wall time.

    HF_HUB_OFFLINE=1 python benchmarks/batch_throughput.py [--prompts 48 --steps 10 --size 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def naive_loop(pipe, prompts: list[str], steps: int, size: int, out: Path) -> dict[str, float]:
    """One diffusers call per prompt, PNG saved inline (the baseline)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    write = 0.0
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        g = torch.Generator("cpu").manual_seed(i)
        image = pipe(prompt, num_inference_steps=steps, height=size, width=size, generator=g).images[0]
        t = time.perf_counter()
        image.save(out / f"{i}.png")
        write += time.perf_counter() - t
    wall = time.perf_counter() - start
    return {"wall": wall, "images_per_s": len(prompts) / wall, "write_share": write / wall}


def runner(pipe, prompt_file: Path, batch_size: int, steps: int, size: int, out: Path) -> dict[str, float]:
    """`safegen.batch` with an already loaded pipeline (same weights as the baseline)."""
    from safegen.batch import BatchConfig, BatchRunner

    cfg = BatchConfig(
        prompts=prompt_file,
        out=out,
        steps=steps,
        width=size,
        height=size,
        batch_size=batch_size,
        device="cpu",
        model="tiny-sd",
    )
    start = time.perf_counter()
    result = BatchRunner(cfg, pipe=pipe, handle_signals=False).run()
    wall = time.perf_counter() - start  # includes reading prompts, run.json, manifest: the whole job
    return {
        "wall": wall,
        "images_per_s": result.generated / wall,
        "write_share": result.stall_seconds / wall,
        "writer_busy_share": result.write_seconds / wall,
        "encoded_prompts": result.encoded_prompts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48, help="number of prompts (distinct, one image each)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline

    from safegen.testing import get_dummy_components

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = StableDiffusionPipeline(**get_dummy_components(0), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = [f"a photo of object number {i}, detailed, studio light" for i in range(args.prompts)]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prompt_file = root / "prompts.txt"
        prompt_file.write_text("\n".join(prompts) + "\n")
        # Warm-up: first calls pay one-off allocation and kernel selection costs.
        pipe("warm up", num_inference_steps=2, height=args.size, width=args.size)
        naive = naive_loop(pipe, prompts, args.steps, args.size, root / "naive")
        rows = {"naive loop": naive}
        for bs in (1, 4, 8):
            rows[f"batch {bs}"] = runner(pipe, prompt_file, bs, args.steps, args.size, root / f"b{bs}")

    print(
        f"tiny SD, {args.prompts} prompts, {args.steps} steps, {args.size}x{args.size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'':12} {'images/s':>9} {'x naive':>8} {'wall s':>7} {'writing':>8} {'writer busy':>12}")
    for name, r in rows.items():
        ratio = r["images_per_s"] / naive["images_per_s"]
        busy = f"{r['writer_busy_share']:.1%}" if "writer_busy_share" in r else "-"
        print(f"{name:12} {r['images_per_s']:9.2f} {ratio:8.2f} {r['wall']:7.2f} {r['write_share']:8.1%} {busy:>12}")
    b8 = rows["batch 8"]
    verdict = {
        "batch8_vs_naive": round(b8["images_per_s"] / naive["images_per_s"], 3),
        "batch8_ok": b8["images_per_s"] >= 1.3 * naive["images_per_s"],
        "batch8_write_share": round(b8["write_share"], 4),
        "write_ok": b8["write_share"] < 0.10,
    }
    print(json.dumps(verdict))


if __name__ == "__main__":
    main()
