"""The GPU suite: what users run, at the sizes they run it, in one command.

Real-size architectures with random weights (configs written below, no hub: random
weights time exactly like the released ones), five sections:

- ``sd15``  SD-1.5-shaped pipeline, fp16, 512x512, 30 steps: seconds per image of safegen's
  SafeStableDiffusionPipeline (a random ViT-L/14 text encoder injected) vs plain diffusers
  (goal: ratio <= 1.01) vs diffusers' Safe Latent Diffusion (SLD, medium).
- ``batch`` ``safegen batch``'s runner at batch 1/8/16, images/s, vs a bound measured in the
  same run: the bare denoising loop (UNet + scheduler on precomputed embeddings) followed
  by the VAE decode, which the runner must also do (goal: runner >= 95% of that bound at
  batch 16); the UNet-only rate is reported too. SDPA attention (diffusers' default
  AttnProcessor2_0); channels_last and, with ``--compile``, ``torch.compile`` of the UNet
  are measured at the largest batch and reported separately.
- ``sdxl``  SDXL-shaped pipeline at 1024 px (latents 128x128): seconds per denoising step,
  safe vs plain (a few steps, latents out, no decode).
- ``train`` Safe-CLIP training step, ViT-L/14 at 224 px, bf16 autocast: LoRA vs full,
  cached vs recomputed references; samples/s, peak memory, and the time of one
  160k-quadruple epoch projected from the measured samples/s (a projection, not a measurement).
  The step is ``train_throughput.run_one`` (the same code as that benchmark).
- ``whitebox`` the white-box attacks of ``safegen eval attack`` (unlearndiff, p4d) at SD-1.4 size
  (SD 1.4 and 1.5 share the architecture), fp16 weights, 512 px: seconds per optimisation step
  (UNet forward + backward through the Safe-CLIP-shaped text encoder, the attack's own
  ``DenoisingAttack.run``) vs one sampling step (UNet on the guidance batch of 2), and the
  projected hours of the full table (142 I2P nudity prompts x 4 methods x 2 attacks at the
  default budget, every query used: an upper bound, a projection, not a measurement).
- ``llava`` LLaVA-1.5-7B-shaped captioning (Llama-7B, CLIP ViT-L/14-336 tower, fp16):
  captions/s batched vs one at a time, every caption forced to the same number of tokens.

Every section uses the shared method of ``_bench.py`` (configurations interleaved in
rounds, median and min-max, per-round ratios) and catches its own failure: the error is
recorded in the JSON and the other sections still run. Prints a table per section, then
one JSON document (also written to ``--json-out``). Exit code 1 if any section failed.

    python benchmarks/gpu_suite.py --device cuda --json-out gpu_suite.json   # GPU, real sizes
    python benchmarks/gpu_suite.py --tiny --device cpu                        # CPU smoke run
    python benchmarks/gpu_suite.py --only sd15,batch --rounds 5 --compile

``--tiny`` runs the same code with tiny configs (64 px, a few steps): a smoke test of the
suite, not a measurement of anything users run. See benchmarks/README.md for how to carry
the wheels the GPU machine lacks (``benchmarks/gpu_wheels.sh``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bench import Result, header, machine_info, measure, summarize, table

from safegen.core.devices import resolve_dtype

SECTIONS = ("sd15", "batch", "sdxl", "train", "whitebox", "llava")
EPOCH_QUADRUPLES = 160_000  # one epoch of the released training set (ViSU quadruples)
PROMPT = "a photo of a cat sitting on a wooden table, detailed, studio light"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one suite run: the real ones, or tiny ones for a CPU smoke run."""

    px: int  # SD-1.5 image side
    steps: int  # SD-1.5 denoising steps (sd15 and batch sections)
    batch_sizes: tuple[int, ...]
    xl_px: int
    xl_steps: int
    train_batch: int
    train_steps: int
    train_warmup: int
    llava_images: int
    llava_batch: int
    llava_tokens: int
    whitebox_steps: int  # optimisation steps per timed attack call
    rounds: int


REAL = Plan(
    px=512,
    steps=30,
    batch_sizes=(1, 8, 16),
    xl_px=1024,
    xl_steps=10,
    train_batch=64,
    train_steps=10,
    train_warmup=3,
    llava_images=8,
    llava_batch=8,
    llava_tokens=32,
    whitebox_steps=10,
    rounds=5,
)
TINY = Plan(
    px=32,
    steps=3,
    batch_sizes=(1, 2, 4),
    xl_px=32,
    xl_steps=2,
    train_batch=4,
    train_steps=2,
    train_warmup=1,
    llava_images=4,
    llava_batch=2,
    llava_tokens=4,
    whitebox_steps=2,
    rounds=2,
)


def images_per_call(batch_size: int) -> int:
    """Images per timed call at ``batch_size``: two full batches (the runner's writer overlaps
    the first batch's PNGs with the second's generation); at batch 1, two images too."""
    return 2 * batch_size


# ----------------------------------------------------------------------------- configs


def clip_l_text_config(tiny: bool) -> Any:
    """CLIP ViT-L/14's text tower (SD-1.x's text encoder, SDXL's first one, Safe-CLIP's)."""
    from transformers import CLIPTextConfig

    from safegen.testing import tiny_clip_text_config

    if tiny:
        return tiny_clip_text_config()
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        max_position_embeddings=77,
        projection_dim=768,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def bigg_text_config(tiny: bool) -> Any:
    """OpenCLIP ViT-bigG/14's text tower (SDXL's second text encoder)."""
    from transformers import CLIPTextConfig

    from safegen.testing import tiny_clip_text_config

    if tiny:
        return tiny_clip_text_config(hidden_act="gelu", projection_dim=32)
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=20,
        num_hidden_layers=32,
        max_position_embeddings=77,
        projection_dim=1280,
        hidden_act="gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def sd15_unet_config(tiny: bool) -> dict[str, Any]:
    """runwayml/stable-diffusion-v1-5's UNet (860 M parameters)."""
    if tiny:
        from safegen.testing import TINY_SD_UNET

        return dict(TINY_SD_UNET)
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8,
        cross_attention_dim=768,
        norm_num_groups=32,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        downsample_padding=1,
        mid_block_scale_factor=1,
    )


def sdxl_unet_config(tiny: bool) -> dict[str, Any]:
    """stabilityai/stable-diffusion-xl-base-1.0's UNet (2.6 B parameters)."""
    if tiny:
        from safegen.testing import TINY_SDXL_UNET

        return dict(TINY_SDXL_UNET)
    return dict(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20),
        transformer_layers_per_block=(1, 2, 10),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,  # 6 * 256 + bigG's 1280
        cross_attention_dim=2048,  # 768 + 1280
        norm_num_groups=32,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def vae_config(tiny: bool, xl: bool = False) -> dict[str, Any]:
    """Stable Diffusion's AutoencoderKL (SD-1.x and SDXL share the architecture; SDXL scales latents differently)."""
    if tiny:
        return dict(
            block_out_channels=(32, 64),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
        )
    return dict(
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        act_fn="silu",
        sample_size=1024 if xl else 512,
        scaling_factor=0.13025 if xl else 0.18215,
    )


def llava_configs(tiny: bool) -> tuple[Any, Any]:
    """(vision, text) configs of llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 and Llama-2-7B-shaped Vicuna."""
    from transformers import CLIPVisionConfig, LlamaConfig

    from safegen.testing import tiny_clip_vision_config

    if tiny:
        vision = tiny_clip_vision_config()
        # A vocabulary larger than the tokenizer's, as in the real run below (the test tokenizer
        # has 400 entries): generated ids outside it must not break decoding.
        text = LlamaConfig(
            vocab_size=1000,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
        )
        return vision, text
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        num_hidden_layers=24,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    text = LlamaConfig(
        vocab_size=32064,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )
    return vision, text


# ----------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class Context:
    """What every section needs: sizes, device, dtype, options and a scratch folder."""

    plan: Plan
    tiny: bool
    device: Any  # torch.device
    dtype: Any  # torch dtype of inference weights
    compile: bool
    scratch: Path

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def build(ctor: Callable[[], Any], ctx: Context, dtype: Any = None) -> Any:
    """Construct a module directly on the device (random init there is fast), cast, eval mode."""
    import torch

    with torch.device(ctx.device):
        module = ctor()
    return module.to(dtype=dtype or ctx.dtype).eval()


def timer(ctx: Context, fn: Callable[[], Any], scale: float = 1.0) -> Callable[[], float]:
    """A ``_bench`` call: run ``fn`` once (synchronised) and return its seconds times ``scale``."""

    def call() -> float:
        ctx.sync()
        t0 = time.perf_counter()
        fn()
        ctx.sync()
        return (time.perf_counter() - t0) * scale

    return call


def rate(ctx: Context, fn: Callable[[], Any], items: int) -> Callable[[], float]:
    """A ``_bench`` call returning items per second."""
    seconds = timer(ctx, fn)
    return lambda: items / seconds()


def ratio_json(result: Result, name: str, baseline: str) -> dict[str, float]:
    """``name``'s per-round ratio to ``baseline`` (median and range)."""
    s = summarize({name: result.values[name], baseline: result.values[baseline]}, baseline)[name]
    return {"ratio": s.ratio, "lo": s.ratio_lo, "hi": s.ratio_hi}


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sd_tokenizer(tiny: bool) -> Any:
    """The CLIP BPE tokenizer, built offline from open_clip's vocabulary file (reduced for tiny)."""
    from safegen.models.clip_tokenizer import create_clip_tokenizer
    from safegen.testing import tiny_tokenizer

    return tiny_tokenizer() if tiny else create_clip_tokenizer()


def sd15_pipelines(ctx: Context) -> dict[str, Any]:
    """Plain diffusers, safegen (random Safe-CLIP-shaped text encoder injected) and SLD on shared weights."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from diffusers.pipelines.deprecated.stable_diffusion_safe import StableDiffusionPipelineSafe
    from transformers import CLIPTextModel

    from safegen import SafeStableDiffusionPipeline

    torch.manual_seed(0)
    unet = build(lambda: UNet2DConditionModel(**sd15_unet_config(ctx.tiny)), ctx)
    unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (diffusers' default), set so the figures say so
    vae = build(lambda: AutoencoderKL(**vae_config(ctx.tiny)), ctx)
    text_encoder = build(lambda: CLIPTextModel(clip_l_text_config(ctx.tiny)), ctx)
    torch.manual_seed(1)
    safe_encoder = build(lambda: CLIPTextModel(clip_l_text_config(ctx.tiny)), ctx)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=sd_tokenizer(ctx.tiny), unet=unet, scheduler=scheduler)
    plain = StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    safe = SafeStableDiffusionPipeline.from_pipe(plain, safe_encoder=safe_encoder)
    sld = StableDiffusionPipelineSafe(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipes = {"diffusers": plain, "safegen": safe, "sld-medium": sld}
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    return pipes


def generator(seed: int = 0) -> Any:
    """A CPU generator, as the batch runner uses: the same noise whatever the device."""
    import torch

    return torch.Generator("cpu").manual_seed(seed)


# ----------------------------------------------------------------------------- sections


def section_sd15(ctx: Context) -> tuple[dict, str]:
    from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

    p = ctx.plan
    pipes = sd15_pipelines(ctx)
    kw = dict(num_inference_steps=p.steps, height=p.px, width=p.px, output_type="pil")

    def call(name: str, steps: int | None = None) -> Callable[[], Any]:
        extra = dict(SafetyConfig.MEDIUM) if name.startswith("sld") else {}
        args = dict(kw, **extra) | ({"num_inference_steps": steps} if steps else {})
        return lambda: pipes[name](PROMPT, generator=generator(), **args)

    for name in pipes:  # warm-up: kernel selection and first allocations at the timed shapes
        call(name, steps=2)()
    result = measure({name: timer(ctx, call(name)) for name in pipes}, baseline="diffusers", rounds=p.rounds)
    safe = ratio_json(result, "safegen", "diffusers")
    data = {
        "what": f"seconds per image, {p.px}x{p.px}, {p.steps} DDIM steps, guidance 7.5, {dtype_name(ctx)}",
        "result": result.to_json(),
        "safegen_vs_diffusers": safe,
        "sld_vs_diffusers": ratio_json(result, "sld-medium", "diffusers"),
        "goal": "safegen / diffusers <= 1.01",
        "goal_met": safe["ratio"] <= 1.01,
    }
    text = "\n".join([data["what"], header(result), table(result, "s/image", ".3f", ratio_label="x diffusers")])
    return data, text


def unet_loop(ctx: Context, pipe: Any, embeds: Any, batch_size: int, images: int, decode: bool) -> dict[str, float]:
    """The bound: denoising loop (UNet + scheduler, guidance 7.5) on precomputed embeddings, then the VAE decode.

    Returns the seconds spent in the loop and in the decode, for ``images`` images made
    ``batch_size`` at a time; no text encoding, no image conversion, no file writing.
    """
    import torch

    p = ctx.plan
    cond, uncond = embeds
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    side = p.px // pipe.vae_scale_factor
    loop_s = decode_s = 0.0
    with torch.inference_mode():
        for start in range(0, images, batch_size):
            b = min(batch_size, images - start)
            text = torch.cat([uncond.expand(b, -1, -1), cond.expand(b, -1, -1)])
            scheduler.set_timesteps(p.steps, device=ctx.device)
            latents = torch.randn((b, 4, side, side), device=ctx.device, dtype=ctx.dtype)
            latents = latents * scheduler.init_noise_sigma
            ctx.sync()
            t0 = time.perf_counter()
            for t in scheduler.timesteps:
                x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                noise = pipe.unet(x, t, encoder_hidden_states=text, return_dict=False)[0]
                uncond_noise, cond_noise = noise.chunk(2)
                noise = uncond_noise + 7.5 * (cond_noise - uncond_noise)
                latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            ctx.sync()
            t1 = time.perf_counter()
            if decode:
                pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)
                ctx.sync()
            loop_s += t1 - t0
            decode_s += time.perf_counter() - t1
    return {"loop_s": loop_s, "decode_s": decode_s}


def section_batch(ctx: Context) -> tuple[dict, str]:
    import torch

    from safegen.jobs import BatchConfig, BatchRunner

    p = ctx.plan
    pipes = sd15_pipelines(ctx)
    pipe = pipes["safegen"]  # what `safegen batch` runs: the safe pipeline
    del pipes
    # The runner fingerprints its model; from a folder that is a cached file hash (as for a
    # user's run), from bare modules a hash of ~2 GB of tensors on every run.
    os.environ["SAFEGEN_CACHE"] = str(ctx.scratch / "safegen-cache")
    model_dir = ctx.scratch / "sd15-model"
    pipe.save_pretrained(model_dir)
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, ctx.device, 1, True, "")
    prompt_files = {}
    for b in p.batch_sizes:
        f = ctx.scratch / f"prompts-{b}.txt"
        f.write_text("".join(f"{PROMPT}, variation {i}\n" for i in range(images_per_call(b))), encoding="utf-8")
        prompt_files[b] = f
    counter = iter(range(10**9))
    extras: dict[str, list[dict[str, float]]] = {}

    def runner_call(b: int, variant: str) -> Callable[[], float]:
        def call() -> float:
            out = ctx.scratch / f"run-{variant}-{b}-{next(counter)}"
            cfg = BatchConfig(
                prompts=prompt_files[b],
                out=out,
                model=str(model_dir),
                steps=p.steps,
                guidance=7.5,
                width=p.px,
                height=p.px,
                batch_size=b,
                device=str(ctx.device),
            )
            res = BatchRunner(cfg, pipe=pipe, handle_signals=False).run()
            if res.generated != images_per_call(b) or res.failed:
                raise RuntimeError(f"runner at batch {b}: {res.generated} images, {res.failed} failed: {res.errors}")
            extras.setdefault(f"{variant} runner b{b}", []).append(
                {"stall_share": res.stall_seconds / res.seconds, "writer_busy_share": res.write_seconds / res.seconds}
            )
            shutil.rmtree(out)  # the suite's own scratch output
            return res.images_per_s

        return call

    def bound_call(b: int, variant: str) -> Callable[[], float]:
        n = images_per_call(b)

        def call() -> float:
            r = unet_loop(ctx, pipe, (cond, uncond), b, n, decode=True)
            extras.setdefault(f"{variant} bound b{b}", []).append({"unet_only_images_per_s": n / r["loop_s"]})
            return n / (r["loop_s"] + r["decode_s"])

        return call

    def channels_last() -> None:
        pipe.unet.to(memory_format=torch.channels_last)

    def contiguous() -> None:
        pipe.unet.to(memory_format=torch.contiguous_format)

    def compiled() -> None:
        contiguous()
        pipe.unet.compile()  # in place: the pipeline and the bound loop both call the compiled forward

    variants: list[tuple[str, Callable[[], None], tuple[int, ...]]] = [
        ("sdpa", contiguous, p.batch_sizes),
        ("channels_last", channels_last, p.batch_sizes[-1:]),
    ]
    if ctx.compile:
        variants.append(("compile", compiled, p.batch_sizes[-1:]))
    data: dict[str, Any] = {
        "what": (
            f"images/s, {p.px}x{p.px}, {p.steps} DDIM steps, guidance 7.5, {dtype_name(ctx)}; bound = UNet loop on "
            "precomputed embeddings + VAE decode; runner = safegen batch (prompt encoding, decode, PNG writing)"
        ),
        "images_per_call": {str(b): images_per_call(b) for b in p.batch_sizes},
        "variants": {},
    }
    lines = [data["what"]]
    for variant, apply, sizes in variants:
        apply()
        calls: dict[str, Callable[[], float]] = {}
        for b in sizes:
            calls[f"bound b{b}"] = bound_call(b, variant)
            calls[f"runner b{b}"] = runner_call(b, variant)
        for call in calls.values():  # warm-up (and, with --compile, the compilation) outside the rounds
            call()
        extras.clear()
        result = measure(calls, baseline=f"bound b{sizes[-1]}", rounds=p.rounds)
        per_size = {}
        for b in sizes:
            unet_only = [e["unet_only_images_per_s"] for e in extras[f"{variant} bound b{b}"]]
            runner = result.values[f"runner b{b}"]
            vs_unet = summarize({"r": runner, "u": unet_only}, "u")["r"]
            stall = [e["stall_share"] for e in extras[f"{variant} runner b{b}"]]
            per_size[str(b)] = {
                "runner_vs_bound": ratio_json(result, f"runner b{b}", f"bound b{b}"),
                "runner_vs_unet_only": {"ratio": vs_unet.ratio, "lo": vs_unet.ratio_lo, "hi": vs_unet.ratio_hi},
                "unet_only_images_per_s_median": statistics.median(unet_only),
                "runner_stall_share_max": max(stall),
            }
        data["variants"][variant] = {"result": result.to_json(), "per_batch_size": per_size}
        lines += [f"[{variant}]", header(result), table(result, "images/s", ".3f")]
        for b, d in per_size.items():
            r = d["runner_vs_bound"]
            lines.append(
                f"batch {b}: runner / bound {r['ratio']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}); runner / UNet-only "
                f"{d['runner_vs_unet_only']['ratio']:.3f}; runner waited for the writer up to "
                f"{d['runner_stall_share_max']:.1%} of its time"
            )
    contiguous()
    big = str(p.batch_sizes[-1])
    best = data["variants"]["sdpa"]["per_batch_size"][big]["runner_vs_bound"]["ratio"]
    data["goal"] = f"runner >= 0.95 x bound at batch {big} (sdpa)"
    data["goal_met"] = best >= 0.95
    shutil.rmtree(model_dir)
    return data, "\n".join(lines)


def section_sdxl(ctx: Context) -> tuple[dict, str]:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from safegen import SafeStableDiffusionXLPipeline

    p = ctx.plan
    torch.manual_seed(0)
    unet = build(lambda: UNet2DConditionModel(**sdxl_unet_config(ctx.tiny)), ctx)
    unet.set_attn_processor(AttnProcessor2_0())
    vae = build(lambda: AutoencoderKL(**vae_config(ctx.tiny, xl=True)), ctx)
    text_encoder = build(lambda: CLIPTextModel(clip_l_text_config(ctx.tiny)), ctx)
    text_encoder_2 = build(lambda: CLIPTextModelWithProjection(bigg_text_config(ctx.tiny)), ctx)
    torch.manual_seed(1)
    safe_encoder = build(lambda: CLIPTextModel(clip_l_text_config(ctx.tiny)), ctx)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    tokenizer = sd_tokenizer(ctx.tiny)
    plain = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    safe = SafeStableDiffusionXLPipeline.from_pipe(plain, safe_encoder=safe_encoder)
    pipes = {"diffusers": plain, "safegen": safe}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    kw = dict(height=p.xl_px, width=p.xl_px, output_type="latent")

    def call(name: str, steps: int) -> Callable[[], Any]:
        return lambda: pipes[name](PROMPT, num_inference_steps=steps, generator=generator(), **kw)

    for name in pipes:
        call(name, 2)()
    calls = {name: timer(ctx, call(name, p.xl_steps), scale=1 / p.xl_steps) for name in pipes}
    result = measure(calls, baseline="diffusers", rounds=p.rounds)
    safe_ratio = ratio_json(result, "safegen", "diffusers")
    data = {
        "what": (
            f"seconds per denoising step, {p.xl_px}x{p.xl_px} (latents {p.xl_px // plain.vae_scale_factor}), "
            f"pipeline call of {p.xl_steps} Euler steps / {p.xl_steps} (prompt encoding included, latents out, "
            f"no decode), guidance 5.0, {dtype_name(ctx)}"
        ),
        "result": result.to_json(),
        "safegen_vs_diffusers": safe_ratio,
        "goal": "safegen / diffusers <= 1.01",
        "goal_met": safe_ratio["ratio"] <= 1.01,
    }
    text = "\n".join([data["what"], header(result), table(result, "s/step", ".4f", ratio_label="x diffusers")])
    return data, text


def section_train(ctx: Context) -> tuple[dict, str]:
    from train_throughput import CONFIGS, run_one

    p = ctx.plan
    args = argparse.Namespace(
        size="tiny" if ctx.tiny else "vit-l",
        device=ctx.device.type,
        dtype="bf16",
        batch_size=p.train_batch,
        steps=p.train_steps,
        warmup=p.train_warmup,
        threads=0,
    )
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}

    def call(name: str) -> Callable[[], float]:
        def run() -> float:
            runs[name].append(run_one(name, args))
            free_memory()
            return runs[name][-1]["samples_per_s"]

        return run

    result = measure({name: call(name) for name in CONFIGS}, baseline="lora-cached", rounds=p.rounds)
    stats = result.stats
    on_gpu = ctx.device.type == "cuda"
    data = {
        "what": (
            f"samples/s (one sample = one quadruple), CLIP {args.size}, batch {p.train_batch}, bf16 autocast, "
            f"{p.train_steps} timed steps after {p.train_warmup} warm-up, a fresh model per call"
        ),
        "result": result.to_json(),
        "peak_mb": {name: max(r["peak_mb"] for r in rs) for name, rs in runs.items()},
        "peak_memory_kind": (
            "torch.cuda.max_memory_allocated during the timed steps, per configuration"
            if on_gpu
            else "max RSS of the whole suite process so far (CPU: not per configuration)"
        ),
        "trainable_params": {name: rs[0]["trainable_params"] for name, rs in runs.items()},
        "epoch_quadruples": EPOCH_QUADRUPLES,
        "epoch_minutes_projected": {
            name: EPOCH_QUADRUPLES / s.median / 60 for name, s in stats.items()
        },  # projected from the measured median samples/s, not timed
        "cached_vs_uncached": {ft: ratio_json(result, f"{ft}-cached", f"{ft}-uncached") for ft in ("lora", "full")},
        "lora_vs_full_cached": ratio_json(result, "lora-cached", "full-cached"),
        "goal": f"one {EPOCH_QUADRUPLES}-quadruple epoch <= 15 min on one H100 (projected from samples/s)",
    }
    data["goal_met"] = min(data["epoch_minutes_projected"].values()) <= 15 if on_gpu else None
    lines = [data["what"], header(result), table(result, "samples/s", ".1f", ratio_label="x lora-cached")]
    for name in CONFIGS:
        lines.append(
            f"{name:<18} peak {data['peak_mb'][name]:.0f} MB, trainable {data['trainable_params'][name]:,}, "
            f"projected epoch {data['epoch_minutes_projected'][name]:.1f} min"
        )
    lines.append(f"peak memory: {data['peak_memory_kind']}")
    return data, "\n".join(lines)


WHITEBOX_TABLE = {"prompts": 142, "methods": 4, "attacks": 2}  # the SD 1.4 nudity table (whitebox_attack_sd14.py)


def section_whitebox(ctx: Context) -> tuple[dict, str]:
    import numpy as np
    import torch
    from PIL import Image

    from safegen.evaluation.attacks import AttackContext, AttackTarget, BannedWords, TextEncoderView
    from safegen.evaluation.attacks.denoising import DiffusionView, UnlearnDiffAttack
    from safegen.evaluation.attacks.engine import DEFAULT_BUDGETS

    p = ctx.plan
    pipes = sd15_pipelines(ctx)
    safe = pipes["safegen"]
    enc = TextEncoderView(safe.tokenizer, safe.text_encoder, device=str(ctx.device))
    view = DiffusionView(safe, enc)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (p.px, p.px, 3), dtype=np.uint8))
    target = AttackTarget("bench", PROMPT + ", nude", PROMPT, "sexual", 0)
    context = AttackContext(
        "safe-clip", encoder=enc, original=enc, diffusion=view, original_diffusion=view,
        target_image=lambda t: (image, True),
    )  # fmt: skip
    attack = UnlearnDiffAttack(BannedWords.load(None), budget=1, steps_per_query=p.whitebox_steps, eval_points=0)
    side = p.px // safe.vae_scale_factor
    latents = torch.randn((2, 4, side, side), generator=generator(), dtype=ctx.dtype).to(ctx.device)
    with torch.inference_mode():
        embeds = safe.text_encoder(enc.ids(["", PROMPT]))[0]  # (2, L, D): the guidance batch

    def sampling_step() -> None:
        with torch.inference_mode():
            safe.unet(latents, torch.tensor(500, device=ctx.device), encoder_hidden_states=embeds)

    def attack_steps() -> None:
        result = attack.run(target, context)
        if result.extra["opt_steps"] != p.whitebox_steps:
            raise RuntimeError(f"{result.extra['opt_steps']} optimisation steps, expected {p.whitebox_steps}")

    enc.word_tokens(attack.banned, target.concept)  # the vocabulary scan, once (cached), out of the timing
    attack_steps()  # warm-up: kernels, allocations at the timed shapes
    sampling_step()
    calls = {
        "sampling step": timer(ctx, sampling_step),
        "attack step": timer(ctx, attack_steps, scale=1 / p.whitebox_steps),
    }
    result = measure(calls, baseline="sampling step", rounds=p.rounds)
    step_s = result.stats["attack step"].median
    sample_s = result.stats["sampling step"].median
    # The projection is for the defaults users run (budget, steps per query), whatever the plan times.
    budget, gen_steps = DEFAULT_BUDGETS["unlearndiff"], 30
    spq = UnlearnDiffAttack(attack.banned, budget=budget).steps_per_query
    # Worst case per prompt: every query spent, each after spq steps, each a 30-step generation.
    per_prompt_s = budget * (spq * step_s + gen_steps * sample_s)
    n = WHITEBOX_TABLE["prompts"] * WHITEBOX_TABLE["methods"] * WHITEBOX_TABLE["attacks"]
    data = {
        "what": (
            f"seconds per unlearndiff optimisation step (UNet forward+backward at {p.px} px through a CLIP "
            f"ViT-L/14-shaped text encoder, {p.whitebox_steps} steps per call) vs one sampling step "
            f"(UNet, guidance batch 2, no gradient), {dtype_name(ctx)}"
        ),
        "result": result.to_json(),
        "attack_step_vs_sampling_step": ratio_json(result, "attack step", "sampling step"),
        "projection": {
            "table": WHITEBOX_TABLE,
            "budget_queries": budget,
            "steps_per_query": spq,
            "generation_steps": gen_steps,
            "seconds_per_prompt_upper_bound": per_prompt_s,
            "table_hours_upper_bound": per_prompt_s * n / 3600,
            "note": "every query used, a 30-step generation per query (decode and judge not counted); projected",
        },
    }
    lines = [data["what"], header(result), table(result, "s/step", ".4f", ratio_label="x sampling")]
    lines.append(
        f"full table ({n} searches, {budget} queries x {spq} steps): at most {per_prompt_s:.1f} s a search, "
        f"{per_prompt_s * n / 3600:.2f} h (projected)"
    )
    return data, "\n".join(lines)


def section_llava(ctx: Context) -> tuple[dict, str]:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPVisionModelWithProjection, LlavaConfig, LlavaForConditionalGeneration

    from safegen import SafeLlavaCaptioner
    from safegen.testing import tiny_llava_processor

    p = ctx.plan
    vision, text = llava_configs(ctx.tiny)
    # No Llama tokenizer offline: the byte-level test tokenizer stands in (prompt lengths differ
    # by a few tokens from Llama's; every caption's new-token count is forced below).
    processor = tiny_llava_processor(vision.image_size, vision.patch_size)
    tok = processor.tokenizer
    text.pad_token_id, text.bos_token_id, text.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    config = LlavaConfig(
        vision_config=vision.to_dict() | {"model_type": "clip_vision_model"},
        text_config=text.to_dict() | {"model_type": "llama"},
        image_token_id=processor.image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = build(lambda: LlavaForConditionalGeneration(config), ctx)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    torch.manual_seed(1)
    safe_tower = build(lambda: CLIPVisionModelWithProjection(vision), ctx)
    captioner = SafeLlavaCaptioner.from_model(
        model, processor, safe_encoder=safe_tower, model_id="llava-1.5-7b-shaped"
    )
    del safe_tower
    rng = np.random.default_rng(0)
    side = vision.image_size
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(p.llava_images)]
    gen = dict(temperature=0.0, max_new_tokens=p.llava_tokens, min_new_tokens=p.llava_tokens)

    def call(bs: int) -> Callable[[], Any]:
        def run() -> None:
            captions = captioner.caption(images, batch_size=bs, **gen)
            if len(captions) != len(images):
                raise RuntimeError(f"{len(captions)} captions for {len(images)} images")

        return run

    modes = {"one at a time": 1, f"batch {p.llava_batch}": p.llava_batch}
    for bs in modes.values():
        captioner.caption(images[: max(bs, 1)], batch_size=bs, **gen)  # warm-up
    result = measure(
        {name: rate(ctx, call(bs), len(images)) for name, bs in modes.items()},
        baseline="one at a time",
        rounds=p.rounds,
    )
    data = {
        "what": (
            f"captions/s, {len(images)} images of {side} px, {p.llava_tokens} new tokens each (forced), greedy, "
            f"{dtype_name(ctx)}, a random Safe-CLIP-shaped tower injected"
        ),
        "result": result.to_json(),
        "batched_vs_one": ratio_json(result, f"batch {p.llava_batch}", "one at a time"),
    }
    text = "\n".join([data["what"], header(result), table(result, "captions/s", ".3f", ratio_label="x one")])
    return data, text


# Parameter counts of the released models (their model cards / a load of their weights):
# the real-size configs above must give exactly these.
PUBLISHED_PARAMS = {
    "sd15-unet": 859_520_964,
    "sd-vae": 83_653_863,
    "clip-l-text": 123_060_480,
    "sdxl-unet": 2_567_463_684,
    "bigg-text": 694_659_840,
    "clip-vit-l-14": 427_616_513,
    "llava-1.5-7b": 7_063_427_072,
}


def real_size_params() -> dict[str, int]:
    """Build every real-size model on the meta device (no memory, no compute) and count parameters."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from train_throughput import _clip
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, LlavaConfig, LlavaForConditionalGeneration

    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters())

    vision, text = llava_configs(False)
    llava = LlavaConfig(
        vision_config=vision.to_dict() | {"model_type": "clip_vision_model"},
        text_config=text.to_dict() | {"model_type": "llama"},
        image_token_id=32000,
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    with torch.device("meta"):
        return {
            "sd15-unet": count(UNet2DConditionModel(**sd15_unet_config(False))),
            "sd-vae": count(AutoencoderKL(**vae_config(False))),
            "clip-l-text": count(CLIPTextModel(clip_l_text_config(False))),
            "sdxl-unet": count(UNet2DConditionModel(**sdxl_unet_config(False))),
            "bigg-text": count(CLIPTextModelWithProjection(bigg_text_config(False))),
            "clip-vit-l-14": count(_clip("vit-l", "meta")),
            "llava-1.5-7b": count(LlavaForConditionalGeneration(llava)),
        }


RUNNERS: dict[str, Callable[[Context], tuple[dict, str]]] = {
    "sd15": section_sd15,
    "batch": section_batch,
    "sdxl": section_sdxl,
    "train": section_train,
    "whitebox": section_whitebox,
    "llava": section_llava,
}


def dtype_name(ctx: Context) -> str:
    return str(ctx.dtype).replace("torch.", "")


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("torch", "diffusers", "transformers", "accelerate", "peft", "open_clip_torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny configs (a CPU smoke run of the same code)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--only", default=None, help=f"comma-separated sections of: {','.join(SECTIONS)}")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; 2 with --tiny)")
    parser.add_argument("--compile", action="store_true", help="batch section: also time torch.compile of the UNet")
    parser.add_argument("--json-out", default=None, help="also write the JSON document to this file")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--dtype",
        choices=["auto", "fp16", "bf16", "fp32"],
        default="auto",
        help="inference weights (auto: fp16 on a GPU, fp32 on a CPU); training always uses bf16 autocast",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only build the real-size models on the meta device and compare parameter counts with the releases",
    )
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in only]
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.check:
        counts = real_size_params()
        for name, n in counts.items():
            verdict = "ok" if n == PUBLISHED_PARAMS[name] else f"MISMATCH (release: {PUBLISHED_PARAMS[name]:,})"
            print(f"{name:<14} {n:>15,} parameters  {verdict}")
        return 0 if counts == PUBLISHED_PARAMS else 1
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_suite: --device cuda but torch sees no CUDA device; pass --device cpu (with --tiny)", file=sys.stderr
        )
        return 2
    plan = TINY if args.tiny else REAL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    # the library's rule: 'auto' is fp16 on a GPU (what users run), fp32 on a CPU
    dtype = resolve_dtype(args.dtype, device.type)
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "suite": "benchmarks/gpu_suite.py",
        "tiny": args.tiny,
        "figures": (
            "smoke run at tiny sizes: checks the suite, measures nothing users run"
            if args.tiny
            else "real-size architectures, random weights"
        ),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "plan": dataclasses.asdict(plan),
        "compile": args.compile,
        "machine": machine_info(),
        "versions": versions(),
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu_suite-") as tmp:
        ctx = Context(plan, args.tiny, device, dtype, args.compile, Path(tmp))
        for name in args.sections:
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                data, text = RUNNERS[name](ctx)
                data = {"ok": True, **data}
                print(text, flush=True)
            except Exception as exc:  # one section's failure must not lose the others' figures
                data = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                    "traceback": traceback.format_exc()[-6000:],
                }
                print(f"{name} failed: {data['error']}", flush=True)
            if data.get("goal") and (args.tiny or device.type != "cuda"):
                data["goal_met"] = None  # the goals are about real sizes on a GPU: a smoke run says nothing
            data["seconds"] = round(time.perf_counter() - t0, 2)
            if device.type == "cuda":
                data["max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
                torch.cuda.reset_peak_memory_stats(device)
            doc["sections"][name] = data
            free_memory()
    doc["total_seconds"] = round(time.perf_counter() - started, 2)
    doc["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(doc, indent=2, default=_json_default)
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(out.name + ".tmp")
        tmp_out.write_text(text + "\n", encoding="utf-8")
        tmp_out.replace(out)
    print("== summary")
    for name, d in doc["sections"].items():
        state = "ok" if d["ok"] else f"FAILED ({d['error'][:120]})"
        goal = "" if d.get("goal_met") is None else f"; goal {'met' if d['goal_met'] else 'MISSED'}: {d['goal']}"
        print(f"{name:<6} {d['seconds']:8.1f} s  {state}{goal}")
    print(f"total {doc['total_seconds']:.1f} s")
    print(text)
    return 0 if all(d["ok"] for d in doc["sections"].values()) else 1


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
