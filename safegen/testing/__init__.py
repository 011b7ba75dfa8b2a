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

    from safegen.models.clip_tokenizer import clip_vocab

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
    from safegen.models.clip_tokenizer import create_clip_tokenizer

    return create_clip_tokenizer(TINY_MERGES)


def tiny_vae(seed: int = 0, **overrides: Any) -> Any:
    """A two-block AutoencoderKL (4 latent channels, scale factor 2), seeded."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    cfg: dict[str, Any] = dict(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    cfg.update(overrides)
    return AutoencoderKL(**cfg)


# A tiny SD UNet: attention only at the lower resolution (1,024-token self-attention at the
# full latent size would cost 50x more on a CPU), cross-attention over 32-d text states.
TINY_SD_UNET: dict[str, Any] = dict(
    block_out_channels=(32, 64),
    layers_per_block=2,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
)


def get_dummy_components(seed: int = 0, text_encoder_seed: int | None = None) -> dict[str, Any]:
    """Components of a tiny StableDiffusionPipeline (diffusers' test recipe, offline tokenizer)."""
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_SD_UNET)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    vae = tiny_vae(seed)
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


# A tiny SDXL UNet: the added text/time embedding takes 6 size ids x 8 + the second encoder's
# 32-d pooled output, and cross-attention reads both encoders' 32-d hidden states side by side.
TINY_SDXL_UNET: dict[str, Any] = dict(
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
    projection_class_embeddings_input_dim=80,
    cross_attention_dim=64,
)


def get_dummy_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """Components of a tiny StableDiffusionXLPipeline: two CLIP text encoders of different widths."""
    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_SDXL_UNET)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    vae = tiny_vae(seed, sample_size=128)
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


# ----------------------------------------------------------------------------- tiny LLaVA

TINY_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_TINY_CORPUS = (
    "USER: ASSISTANT: Describe this image. What is in the picture?",
    "a photo of a red circle on a green background",
    "a blue square next to a yellow triangle under a white sky",
    "the image shows a small black dog and a large orange cat",
    "there is a person standing in a field with trees and flowers",
    "an empty room with a wooden table, two chairs and a lamp",
    "0 1 2 3 4 5 6 7 8 9 , . ! ? : ; ' \" ( ) - _ / \\ @ # % & * + = < > [ ] { }",
)
_TINY_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


def tiny_llava_tokenizer(vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer trained in-process on a fixed corpus (deterministic, offline).

    Byte-level: any text round-trips, so generated ids always decode. ``<image>`` is a
    single special token, as LlavaProcessor requires; ``<s>`` is prepended like Llama's.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(_TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_TINY_CORPUS) * 4, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        model_max_length=512,
    )


def tiny_llava_processor(image_size: int = 32, patch_size: int = 8) -> Any:
    """A LlavaProcessor for :func:`tiny_llava`: CLIP image processing at ``image_size`` and a chat template."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tiny_llava_tokenizer(),
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=TINY_LLAVA_CHAT_TEMPLATE,
    )


def tiny_llava(seed: int = 0, vision_seed: int | None = None, **vision_overrides: Any) -> tuple[Any, Any]:
    """A tiny ``LlavaForConditionalGeneration`` and its processor, seeded (tower 32 px, patch 8; Llama hidden 32).

    ``vision_seed`` re-initialises only the vision tower, so two models can differ in their
    tower and nothing else; ``vision_overrides`` change the tower's CLIPVisionConfig.
    """
    import torch
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision_config = tiny_clip_vision_config(**vision_overrides)
    processor = tiny_llava_processor(vision_config.image_size, vision_config.patch_size)
    tokenizer = processor.tokenizer
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,  # large enough that the image visibly steers greedy decoding
    )
    config = LlavaConfig(
        vision_config=vision_config.to_dict() | {"model_type": "clip_vision_model"},
        text_config=text_config.to_dict() | {"model_type": "llama"},
        image_token_id=processor.image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    if vision_seed is not None:
        torch.manual_seed(vision_seed)
        fresh = type(model.model.vision_tower)(model.model.vision_tower.config)
        model.model.vision_tower.load_state_dict(fresh.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def tiny_safe_vision_encoder(seed: int = 1, **overrides: Any) -> Any:
    """A tiny CLIPVisionModelWithProjection shaped like :func:`tiny_llava`'s tower (a stand-in Safe-CLIP)."""
    import torch
    from transformers import CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(tiny_clip_vision_config(**overrides)).eval()


def tiny_clip_processor(image_size: int = 32) -> Any:
    """A CLIPProcessor for :func:`tiny_clip_model`: the reduced CLIP BPE tokenizer and ``image_size`` px images."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer())
