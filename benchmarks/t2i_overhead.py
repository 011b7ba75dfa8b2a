"""Inference overhead of Safe-CLIP vs plain diffusers vs Safe Latent Diffusion (SLD).

Safe-CLIP only swaps text-encoder weights, so its promise is zero overhead; SLD adds a
third UNet batch entry (the safety concept) every step. All pipelines share the same tiny
components built in code; runs are interleaved in rounds and the median, min-max and
per-round ratio with its range are reported (the shared method of ``_bench.py``). Image-to-image
and inpainting (strength 0.75, a fixed random photo and a centre mask) are compared with
their own plain diffusers pipeline: ratio = safe / plain of the same task.

    python benchmarks/t2i_overhead.py [--steps 10] [--repeats 15] [--size 64]
"""

from __future__ import annotations

import argparse
import time

import torch
from _bench import header, measure, summarize


def unet_batch_sizes(pipe, call) -> list[int]:
    """Run ``call`` once and record the batch size of every UNet forward."""
    sizes: list[int] = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda _m, args, kwargs: sizes.append(int(args[0].shape[0])), with_kwargs=True
    )
    try:
        call()
    finally:
        handle.remove()
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds (>= 5)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import numpy as np
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig, StableDiffusionPipelineSafe
    from PIL import Image

    from safegen import SafeStableDiffusionPipeline, make_safe
    from safegen.testing import get_dummy_components, tiny_clip_model

    if args.threads:
        torch.set_num_threads(args.threads)
    comps = get_dummy_components(seed=0)
    plain = StableDiffusionPipeline(**comps, requires_safety_checker=False)
    safe = SafeStableDiffusionPipeline.from_pipe(plain, safe_encoder=tiny_clip_model(seed=5))
    sld_comps = {k: comps[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    sld = StableDiffusionPipelineSafe(
        **sld_comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    plain_i2i = StableDiffusionImg2ImgPipeline.from_pipe(plain)
    plain_inpaint = StableDiffusionInpaintPipeline.from_pipe(plain)
    pipes = {
        "diffusers": plain,
        "safegen": safe,
        "sld-medium": sld,
        "diffusers-i2i": plain_i2i,
        "safegen-i2i": make_safe(plain_i2i, safe_encoder=tiny_clip_model(seed=5)),
        "diffusers-inpaint": plain_inpaint,
        "safegen-inpaint": make_safe(plain_inpaint, safe_encoder=tiny_clip_model(seed=5)),
    }
    baseline = {name: "diffusers" + name[name.index("-") :] if "-i" in name else "diffusers" for name in pipes}
    photo = Image.fromarray((np.random.RandomState(0).rand(args.size, args.size, 3) * 255).astype("uint8"))
    mask = Image.new("L", (args.size, args.size), 0)
    mask.paste(255, (args.size // 4, args.size // 4, 3 * args.size // 4, 3 * args.size // 4))
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)

    prompt = "a red circle on a blue background"

    def caller(name):
        pipe = pipes[name]
        kw = dict(num_inference_steps=args.steps, height=args.size, width=args.size, output_type="np")
        if name.startswith("sld"):
            kw.update(SafetyConfig.MEDIUM)
        if name.endswith(("-i2i", "-inpaint")):
            kw.update(image=photo, strength=0.75)
        if name.endswith("-inpaint"):
            kw.update(mask_image=mask)
        return lambda: pipe(prompt, generator=torch.Generator().manual_seed(0), **kw)

    batch = {name: unet_batch_sizes(pipes[name], caller(name)) for name in pipes}

    def timed(name):
        call = caller(name)

        def run() -> float:
            t0 = time.perf_counter()
            call()
            return time.perf_counter() - t0

        return run

    # Interleaved rounds (benchmarks/_bench.py); each safe pipeline's ratio is taken per round
    # against the plain pipeline of its own task.
    result = measure({name: timed(name) for name in pipes}, baseline="diffusers", rounds=args.repeats)
    per_task = {name: summarize(result.values, baseline[name])[name] for name in pipes}
    print(f"tiny SD, {args.size}x{args.size}, {args.steps} steps")
    print(header(result))
    print(
        f"{'pipeline':<18} {'median s':>9} {'min-max':>15} {'ratio':>7} {'ratio min-max':>14} "
        f"{'UNet batch':>11} {'UNet calls':>11}"
    )
    for name in pipes:
        s, b = per_task[name], batch[name]
        print(
            f"{name:<18} {s.median:9.4f} {f'{s.lo:.3f}-{s.hi:.3f}':>15} {s.ratio:7.3f} "
            f"{f'{s.ratio_lo:.3f}-{s.ratio_hi:.3f}':>14} {max(b):>11} {len(b):>11}"
        )


if __name__ == "__main__":
    main()
