"""Safe-CLIP training throughput: samples/s and peak memory, cached vs recomputed reference
embeddings, LoRA vs full fine-tuning.

Each configuration runs in its own subprocess (so peak memory is its own: max RSS on the
CPU, ``torch.cuda.max_memory_allocated`` on a GPU) over the same synthetic batches, using
the real training module, loss and gradient step of ``safegen_train``. Configurations run
interleaved in rounds with the shared method of ``_bench.py`` (a fresh process per call);
ratios are per round against LoRA with cached references (the default configuration).

    python benchmarks/train_throughput.py --threads 1 --rounds 5  # tiny CLIP, CPU
    python benchmarks/train_throughput.py --size vit-l --device cuda --dtype bf16 --batch-size 64

``--size vit-l`` builds openai/clip-vit-large-patch14's public architecture with random
weights (no download): it times exactly like the real model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from _bench import header, measure, table

CONFIGS = {
    "lora-cached": dict(finetune="lora", cache=True),
    "lora-uncached": dict(finetune="lora", cache=False),
    "full-cached": dict(finetune="full", cache=True),
    "full-uncached": dict(finetune="full", cache=False),
}


def _clip(size: str, device: str = "cpu"):
    """CLIP at ``size``; ViT-L/14 is built on ``device`` (random init of 428 M parameters is slow on a CPU)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from safegen.testing import tiny_clip_model

    if size == "tiny":
        return tiny_clip_model(0)
    # openai/clip-vit-large-patch14 (public config), random weights
    text = dict(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        projection_dim=768,
        hidden_act="quick_gelu",
        vocab_size=49408,
        max_position_embeddings=77,
    )
    vision = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        num_hidden_layers=24,
        image_size=224,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    with torch.device(device):
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Time ``args.steps`` optimizer steps of one configuration (after ``args.warmup`` untimed ones)."""
    import torch
    from accelerate import Accelerator

    from safegen_train.losses import SafeCLIPLoss
    from safegen_train.model import SafeCLIPModule
    from safegen_train.trainer import accumulate_gradients

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = CONFIGS[name]
    clip = _clip(args.size, args.device)
    module = SafeCLIPModule(
        clip,
        towers=["text", "vision"],
        finetune=spec["finetune"],
        lora_target_modules=["k_proj", "v_proj", "out_proj", "fc1", "fc2", "patch_embedding"],
    )
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.dtype)
    module.to(accelerator.device)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    model, optimizer = accelerator.prepare(module, optimizer)
    loss_fn = SafeCLIPLoss()
    cfg_t, cfg_v = clip.config.text_config, clip.config.vision_config
    b, seq, px = args.batch_size, 77, cfg_v.image_size
    n_batches = 4
    batches = []
    for i in range(n_batches):
        g = torch.Generator().manual_seed(i)
        batch = {
            "index": torch.arange(i * b, (i + 1) * b),
            "safe_input_ids": torch.randint(0, cfg_t.vocab_size - 2, (b, seq), generator=g),
            "unsafe_input_ids": torch.randint(0, cfg_t.vocab_size - 2, (b, seq), generator=g),
            "safe_attention_mask": torch.ones(b, seq, dtype=torch.long),
            "unsafe_attention_mask": torch.ones(b, seq, dtype=torch.long),
            "safe_image_pixels": torch.randn(b, 3, px, px, generator=g),
            "unsafe_image_pixels": torch.randn(b, 3, px, px, generator=g),
        }
        batches.append({k: v.to(accelerator.device) for k, v in batch.items()})
    cache = None
    if spec["cache"]:  # what fit does once before training (not timed: it is amortised over all epochs)
        with torch.no_grad():
            refs = [module.encode_reference(bt) for bt in batches]
        cache = {k: torch.cat([r[k] for r in refs]) for k in refs[0]}
    sync = torch.cuda.synchronize if accelerator.device.type == "cuda" else (lambda: None)
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync()
            t0 = time.perf_counter()
        accumulate_gradients(accelerator, model, loss_fn, [batches[step % n_batches]], cache=cache)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    elapsed = time.perf_counter() - t0
    if accelerator.device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {
        "config": name,
        "samples_per_s": args.steps * b / elapsed,
        "step_s": elapsed / args.steps,
        "peak_mb": peak_mb,
        "trainable_params": trainable,
    }


def run_subprocess(name: str) -> dict:
    """One configuration in a fresh process (its own peak memory), same flags as this run."""
    cmd = [sys.executable, __file__, "--only", name] + sys.argv[1:]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(f"{name} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "vit-l"], default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=["no", "bf16", "fp16"], default="no", help="mixed precision")
    parser.add_argument("--batch-size", type=int, default=16, help="paper's job scripts: 16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 5 for a published figure)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--only", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only, args)))
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # so the header records the children's thread count
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}

    def call(name: str):
        def run() -> float:
            runs[name].append(run_subprocess(name))
            return runs[name][-1]["samples_per_s"]

        return run

    result = measure({name: call(name) for name in CONFIGS}, baseline="lora-cached", rounds=args.rounds)
    print(f"size={args.size} device={args.device} dtype={args.dtype} batch={args.batch_size} steps={args.steps}")
    print(header(result))
    print(table(result, "samples/s", ".1f", ratio_label="x lora-cached"))
    for name, rs in runs.items():
        print(f"{name:<18} peak MB {max(r['peak_mb'] for r in rs):.1f}, trainable params {rs[0]['trainable_params']}")
    values = result.values
    for ft in ("lora", "full"):
        c, u = values[f"{ft}-cached"], values[f"{ft}-uncached"]
        gains = sorted(100 * (cs / us - 1) for cs, us in zip(c, u, strict=True))  # per round
        print(
            f"{ft}: caching references is {statistics.median(gains):.0f}% faster per step "
            f"(per-round range {gains[0]:.0f}% to {gains[-1]:.0f}%)"
        )
    ratios = sorted(lc / fc for lc, fc in zip(values["lora-cached"], values["full-cached"], strict=True))
    print(
        f"LoRA vs full (cached): speed {statistics.median(ratios):.2f}x (per-round {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )


if __name__ == "__main__":
    main()
