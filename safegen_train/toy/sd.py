"""Train the toy Stable Diffusion: an AutoencoderKL and a UNet conditioned on the toy CLIP.

The UNet reads the per-token ``last_hidden_state`` of the (frozen) toy CLIP text encoder,
exactly as Stable Diffusion 1.x reads CLIP ViT-L/14, so swapping in the Safe-CLIP text
encoder is the paper's intervention. It is trained on safe AND unsafe captions, so the
original model draws blood, flames and guns when asked. Saved as a plain diffusers
``StableDiffusionPipeline`` folder (no safety checker), fp16 safetensors.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from safegen import copy_tower_weights, load_safe_text_encoder
from safegen_train.toy.common import (
    create_toy_tokenizer,
    images_to_uint8,
    mark_config_fp32,
    seed_everything,
    tokenize,
    unit_range,
)
from safegen_train.toy.world import IMAGE_SIZE, make_pretraining_quadruples

_logger = logging.getLogger(__name__)

SCHEDULER_KWARGS = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
)


def create_toy_vae() -> Any:
    """AutoencoderKL: 32x32x3 <-> 8x8x4 latents (two downsamplings)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def create_toy_unet(cross_attention_dim: int = 128) -> Any:
    """UNet2DConditionModel on 8x8x4 latents with cross-attention to 128-d text tokens."""
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(48, 96, 96),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def load_text_encoder(clip_dir: str | Path) -> Any:
    """The toy CLIP's text tower as a ``CLIPTextModel`` (what SD pipelines hold), fp32, eval."""
    tower = load_safe_text_encoder(str(clip_dir), torch_dtype=torch.float32)
    text_encoder = CLIPTextModel(tower.config).float()
    copy_tower_weights(tower, text_encoder, "text")
    return text_encoder.eval()


def _cosine_lr(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_vae(pixels: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int) -> Any:
    """Fit the autoencoder (MSE + a tiny KL, as SD's VAE is nearly deterministic)."""
    vae = create_toy_vae().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr, max(1, steps // 20))
        idx = torch.randint(len(pixels), (batch_size,), generator=gen)
        x = unit_range(pixels[idx])  # (B, 3, 32, 32)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        kl = posterior.kl().mean()
        loss = F.mse_loss(recon, x) + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            _logger.info(
                "vae step %d/%d mse %.5f kl %.1f (%.0fs)", step, steps, loss.item(), kl.item(), time.time() - t0
            )
    return vae.eval()


def _world_pixels(num_scenes: int, seed: int) -> tuple[list[str], torch.Tensor]:
    # The original SD renders every wording and sentence shape, held-out ones included.
    records = make_pretraining_quadruples(num_scenes, seed + 1)
    texts = [r["safe_text"] for r in records] + [r["unsafe_text"] for r in records]
    pixels = images_to_uint8([r["safe_image"] for r in records] + [r["unsafe_image"] for r in records])
    return texts, pixels  # (P,), (P, 3, H, W) uint8


def train_toy_vae(
    out_dir: str | Path, *, num_scenes: int = 4_000, steps: int = 800, batch_size: int = 32, seed: int = 0
) -> Any:
    """Train the toy VAE alone (it needs no CLIP, so a build can run it beside CLIP) and save it."""
    seed_everything(seed)
    _, pixels = _world_pixels(num_scenes, seed)
    vae = train_vae(pixels, steps=steps, batch_size=batch_size, lr=1e-3, seed=seed)
    vae.save_pretrained(str(out_dir))
    return vae


def train_toy_sd(
    out_dir: str | Path,
    clip_dir: str | Path,
    *,
    vae_dir: str | Path | None = None,
    num_scenes: int = 12_000,
    vae_steps: int = 800,
    unet_steps: int = 6_000,
    batch_size: int = 128,
    seed: int = 0,
    cfg_dropout: float = 0.1,
) -> dict[str, Any]:
    """Train (or load) the VAE, then the UNet on safe and unsafe pairs; save the diffusers pipeline folder."""
    seed_everything(seed)
    t0 = time.time()
    texts, pixels = _world_pixels(num_scenes, seed)
    if vae_dir is not None:
        vae = AutoencoderKL.from_pretrained(str(vae_dir), torch_dtype=torch.float32).eval()
    else:
        vae = train_vae(pixels, steps=vae_steps, batch_size=32, lr=1e-3, seed=seed)
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(unit_range(pixels[i : i + 512])).latent_dist.mean for i in range(0, len(pixels), 512)]
        )
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling  # (P, 4, 8, 8)
    _logger.info("latents %s, scaling factor %.4f (%.0fs)", tuple(latents.shape), scaling, time.time() - t0)

    tokenizer = create_toy_tokenizer()
    text_encoder = load_text_encoder(clip_dir)
    unique = sorted(set(texts)) + [""]
    index = {t: i for i, t in enumerate(unique)}
    with torch.no_grad():
        cond_table = text_encoder(input_ids=tokenize(tokenizer, unique)).last_hidden_state  # (T, L, 128)
    pair_text = torch.tensor([index[t] for t in texts])
    empty = index[""]

    unet = create_toy_unet(text_encoder.config.hidden_size).train()
    n_params = sum(p.numel() for p in unet.parameters())
    _logger.info("unet %.2fM params", n_params / 1e6)
    noise_sched = DDPMScheduler(**SCHEDULER_KWARGS)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(unet_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, unet_steps, 1e-3, max(1, unet_steps // 50))
        idx = torch.randint(len(latents), (batch_size,), generator=gen)
        x0 = latents[idx]
        tid = pair_text[idx].clone()
        tid[torch.rand(batch_size, generator=gen) < cfg_dropout] = empty  # unconditional for CFG
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch_size,), generator=gen)
        xt = noise_sched.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=cond_table[tid]).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == unet_steps - 1:
            _logger.info("unet step %d/%d loss %.4f (%.0fs)", step, unet_steps, loss.item(), time.time() - t0)

    out_dir = Path(out_dir)
    save_toy_sd(out_dir, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet.eval())
    _logger.info("toy SD saved to %s (%.0fs)", out_dir, time.time() - t0)
    return {"unet_params": n_params, "seconds": time.time() - t0}


def save_toy_sd(out_dir: Path, *, vae: Any, text_encoder: Any, tokenizer: Any, unet: Any) -> None:
    """The trained parts as a diffusers StableDiffusionPipeline folder (fp16 weights, DDIM sampling)."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SCHEDULER_KWARGS, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    try:
        pipe.save_pretrained(str(out_dir), safe_serialization=True)
    finally:
        pipe.to(torch.float32)
    mark_config_fp32(out_dir / "text_encoder" / "config.json")  # transformers 5 loads a config's dtype


def main(argv: list[str] | None = None) -> None:
    """``python -m safegen_train.toy.sd --clip DIR --out DIR``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--clip", default=None, help="the toy CLIP folder (its text tower conditions the UNet)")
    p.add_argument("--scenes", type=int, default=12_000)
    p.add_argument("--vae-steps", type=int, default=800)
    p.add_argument("--vae", default=None, help="a trained toy VAE folder (skip VAE training)")
    p.add_argument("--vae-only", action="store_true", help="train and save the VAE alone to --out")
    p.add_argument("--unet-steps", type=int, default=6_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.vae_only:
        train_toy_vae(args.out, num_scenes=args.scenes, steps=args.vae_steps, seed=args.seed)
        return
    train_toy_sd(
        args.out,
        args.clip,
        vae_dir=args.vae,
        num_scenes=args.scenes,
        vae_steps=args.vae_steps,
        unet_steps=args.unet_steps,
        batch_size=args.batch_size,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
