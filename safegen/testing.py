"""Tiny models built in code, for tests, examples and benchmarks (no downloads).

Shapes follow diffusers' and transformers' own test fixtures: two-block UNet with 32/64
channels, a two-block VAE, and a 32-wide CLIP text encoder with a reduced CLIP BPE
vocabulary. Everything is seeded, so two calls give identical weights.
"""

from __future__ import annotations

from typing import Any

TINY_MERGES = 1000  # vocab 1,514: real CLIP BPE, just fewer merges


def tiny_clip_text_config(seed_hidden: int = 32, projection_dim: int = 32, **overrides: Any) -> Any:
    from transformers import CLIPTextConfig

    from .clip_tokenizer import clip_vocab

    vocab_size = len(clip_vocab(TINY_MERGES)[0])
    cfg = dict(
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=seed_hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        hidden_act="quick_gelu",
    )
    cfg.update(overrides)
    return CLIPTextConfig(**cfg)


def tiny_clip_vision_config(**overrides: Any) -> Any:
    from transformers import CLIPVisionConfig

    cfg = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
        hidden_act="quick_gelu",
    )
    cfg.update(overrides)
    return CLIPVisionConfig(**cfg)


def tiny_clip_model(seed: int = 0) -> Any:
    """A tiny transformers CLIPModel (both towers), seeded."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=tiny_clip_text_config().to_dict(),
        vision_config=tiny_clip_vision_config().to_dict(),
        projection_dim=32,
    )
    return CLIPModel(config).eval()


def tiny_tokenizer() -> Any:
    from .clip_tokenizer import create_clip_tokenizer

    return create_clip_tokenizer(TINY_MERGES)


def get_dummy_components(seed: int = 0, text_encoder_seed: int | None = None) -> dict[str, Any]:
    """Components of a tiny StableDiffusionPipeline (diffusers' test recipe, offline tokenizer)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(seed if text_encoder_seed is None else text_encoder_seed)
    text_encoder = CLIPTextModel(tiny_clip_text_config())
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tiny_tokenizer(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def tiny_sd_pipeline(seed: int = 0, cls: Any = None) -> Any:
    """A tiny StableDiffusionPipeline (or ``cls``) on the CPU."""
    from diffusers import StableDiffusionPipeline

    cls = cls or StableDiffusionPipeline
    pipe = cls(**get_dummy_components(seed), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def get_dummy_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Components of a tiny StableDiffusionXLPipeline: two CLIP text encoders of different widths."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
        cross_attention_dim=64,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=128,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_clip_text_config())
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config(hidden_act="gelu", projection_dim=32))
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tiny_tokenizer(),
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tiny_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
    }
