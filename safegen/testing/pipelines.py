"""Tiny components for every pipeline family safegen covers, built in code (no downloads).

The recipes follow diffusers' own fast tests (``get_dummy_components()``): a two-block
UNet, a ControlNet cut from it, 9-channel inpainting UNets, and the transformer families
(SD3, FLUX) with a tiny T5 so their uncovered encoders are real T5 models. T5's
SentencePiece tokenizer cannot be built offline; the byte-level BPE of
:func:`safegen.testing.tiny_llava_tokenizer` stands in (the pipelines only need ids).
"""

from __future__ import annotations

from typing import Any

from safegen.testing import get_dummy_components, get_dummy_sdxl_components, tiny_clip_text_config, tiny_tokenizer


def _tiny_unet(seed: int, in_channels: int, *, sdxl: bool) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    common: dict[str, Any] = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    if not sdxl:
        return UNet2DConditionModel(cross_attention_dim=32, **common)
    return UNet2DConditionModel(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
        cross_attention_dim=64,
        **common,
    )


def get_dummy_family_components(family: str, seed: int = 0) -> dict[str, Any]:
    """Components for ``family``: sd, sd-inpaint, sd-controlnet, sdxl, sdxl-inpaint, sdxl-controlnet, sd3, flux.

    img2img pipelines take the text-to-image components of their family.
    """
    builders = {"sd3": get_dummy_sd3_components, "flux": get_dummy_flux_components}
    if family in builders:
        return builders[family](seed)
    base, _, variant = family.partition("-")
    if base not in ("sd", "sdxl") or variant not in ("", "inpaint", "controlnet"):
        raise ValueError(f"unknown family '{family}'")
    sdxl = base == "sdxl"
    components = get_dummy_sdxl_components(seed) if sdxl else get_dummy_components(seed)
    if variant == "inpaint":
        # Inpainting UNets read latents, the mask and the masked image's latents: 4 + 1 + 4.
        components["unet"] = _tiny_unet(seed, 9, sdxl=sdxl)
    if variant == "controlnet":
        import torch
        from diffusers import ControlNetModel

        torch.manual_seed(seed)
        components["controlnet"] = ControlNetModel.from_unet(
            components["unet"], conditioning_embedding_out_channels=(16, 32)
        )
    return components


def tiny_t5_encoder(seed: int = 0, d_model: int = 32, vocab_size: int = 400) -> Any:
    """A two-layer T5 encoder (the family of SD3's and FLUX's third/second text encoder)."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _tiny_flow_vae(seed: int, latent_channels: int) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def get_dummy_flux_components(seed: int = 0) -> dict[str, Any]:
    """A tiny FluxPipeline: CLIP-L-style ``text_encoder`` (coverable) and T5 ``text_encoder_2`` (not)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from safegen.testing import tiny_llava_tokenizer

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_clip_text_config())
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "tokenizer": tiny_tokenizer(),
        "text_encoder_2": tiny_t5_encoder(seed),
        "tokenizer_2": tiny_llava_tokenizer(),
        "transformer": transformer,
        "vae": _tiny_flow_vae(seed, latent_channels=1),
        "image_encoder": None,
        "feature_extractor": None,
    }


def get_dummy_sd3_components(seed: int = 0) -> dict[str, Any]:
    """A tiny StableDiffusion3Pipeline: CLIP-L (coverable), CLIP-G and T5 (not covered by any Safe-CLIP)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    from safegen.testing import tiny_llava_tokenizer

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(tiny_clip_text_config())
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config(hidden_act="gelu"))
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": tiny_t5_encoder(seed),
        "tokenizer": tiny_tokenizer(),
        "tokenizer_2": tiny_tokenizer(),
        "tokenizer_3": tiny_llava_tokenizer(),
        "transformer": transformer,
        "vae": _tiny_flow_vae(seed, latent_channels=4),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_pipeline(pipeline_cls: type, family: str, seed: int = 0) -> Any:
    """``pipeline_cls`` built from :func:`get_dummy_family_components` (progress bar off)."""
    import inspect

    components = get_dummy_family_components(family, seed)
    accepted = inspect.signature(pipeline_cls.__init__).parameters
    kwargs = {k: v for k, v in components.items() if k in accepted}
    if "requires_safety_checker" in accepted:
        kwargs["requires_safety_checker"] = False
    pipe = pipeline_cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe
