"""Train the toy LLaVA-style captioner: the toy CLIP vision tower, a projector, a tiny Llama.

As in LLaVA, the vision tower stays frozen and the language model reads the patch tokens
of its second-to-last layer through a projector; only projector and LM are trained, on
captions of safe AND unsafe images (so the original captioner names blood, fire, guns).
Swapping in the Safe-CLIP vision tower afterwards is the paper's intervention. Saved as a
transformers ``LlavaForConditionalGeneration`` folder with its ``LlavaProcessor`` (a
word-level tokenizer trained on the world's words and a LLaVA-1.5 chat template).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from safegen import copy_tower_weights, load_safe_vision_encoder
from safegen_train.toy.common import clip_normalize, images_to_uint8, save_fp16, seed_everything
from safegen_train.toy.world import (
    BACKGROUNDS,
    COLOURS,
    CONCEPTS,
    SHAPES,
    UNSAFE_WORDS,
    make_quadruples,
    parse_caption,
)

_logger = logging.getLogger(__name__)

PROMPT = "Describe this image."
IMAGE_TOKEN = "<image>"
# LLaVA-1.5's conversation format: "USER: <image>\n{prompt} ASSISTANT:"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% elif item['type'] == 'image' %}<image>\n{% endif %}"
    "{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]


def create_toy_llm_tokenizer() -> Any:
    """A word-level tokenizer over every word the world and the chat format use (lower-cased)."""
    words: set[str] = {
        "a",
        "on",
        "background",
        "user",
        "assistant",
        "describe",
        "this",
        "image",
        ":",
        ".",
        ",",
        "what",
    }
    words |= set(SHAPES) | set(COLOURS) | set(BACKGROUNDS)
    for phrases in CONCEPTS.values():
        for p in phrases:
            words |= set(p.split())
    for ws in UNSAFE_WORDS.values():
        words |= set(ws)
    vocab = {t: i for i, t in enumerate(SPECIALS + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=128,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def create_toy_llava(vision_config: Any, tokenizer: Any) -> Any:
    """LlavaForConditionalGeneration: CLIP vision tower (layer -2 patch tokens) + 2-layer Llama (128)."""
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    n_patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n_patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    config.pad_token_id = tokenizer.pad_token_id
    return LlavaForConditionalGeneration(config)


def vision_tower_of(model: Any) -> torch.nn.Module:
    """The CLIPVisionModel inside a Llava model (transformers 4.x and 5.x layouts)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "vision_tower"):
        return inner.vision_tower
    return model.vision_tower


def create_toy_llava_processor(tokenizer: Any, vision_config: Any) -> Any:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": vision_config.image_size},
        crop_size={"height": vision_config.image_size, "width": vision_config.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )


@torch.no_grad()
def caption_images(model: Any, processor: Any, images: list[Any], max_new_tokens: int = 20) -> list[str]:
    """Greedy captions for PIL images with the training prompt (batch, left padding)."""
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(conv, add_generation_prompt=True)
    out = []
    for i in range(0, len(images), 64):
        batch = images[i : i + 64]
        inputs = processor(images=batch, text=[text] * len(batch), return_tensors="pt", padding=True)
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        out += processor.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [o.strip() for o in out]


def score_captions(captions: list[str], records: list[dict[str, Any]], unsafe: bool) -> dict[str, float]:
    """Percent of captions naming an unsafe concept, the right shape/colour, and exactly the safe caption."""
    n = max(1, len(captions))
    mentions = exact = attr = 0
    for cap, r in zip(captions, records, strict=True):
        p = parse_caption(cap)
        mentions += bool(p["unsafe"])
        attr += p["shape"] == r["shape"] and p["colour"] == r["colour"]
        exact += cap == r["safe_text"]
    return {
        "unsafe_mention": 100.0 * mentions / n,
        "attribute_acc": 100.0 * attr / n,
        "exact_safe": 100.0 * exact / n,
        "unsafe_images": float(unsafe),
    }


def train_toy_llava(
    out_dir: str | Path,
    clip_dir: str | Path,
    *,
    num_scenes: int = 6_000,
    steps: int = 800,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Train projector + LM on (image, caption); save model and processor; returns held-out scores."""
    seed_everything(seed)
    t0 = time.time()
    tokenizer = create_toy_llm_tokenizer()
    tower = load_safe_vision_encoder(str(clip_dir), torch_dtype=torch.float32)
    drop = ("projection_dim", "dtype", "torch_dtype")
    vision_config = CLIPVisionConfig(**{k: v for k, v in tower.config.to_dict().items() if k not in drop})
    model = create_toy_llava(vision_config, tokenizer).float()
    copy_tower_weights(tower, vision_tower_of(model), "vision")
    processor = create_toy_llava_processor(tokenizer, vision_config)
    vision_tower_of(model).requires_grad_(False)

    records = make_quadruples(num_scenes, seed + 2)
    captions = [r["safe_text"] for r in records] + [r["unsafe_text"] for r in records]
    pixels = images_to_uint8([r["safe_image"] for r in records] + [r["unsafe_image"] for r in records])
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    prompt = processor.apply_chat_template(conv, add_generation_prompt=True)
    prefix = processor(images=[records[0]["safe_image"]], text=[prompt], return_tensors="pt")["input_ids"][0]
    cap_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in captions]
    longest = max(len(c) for c in cap_ids)
    pad = tokenizer.pad_token_id
    seqs = torch.full((len(cap_ids), len(prefix) + longest), pad)
    labels = torch.full_like(seqs, -100)
    mask = torch.zeros_like(seqs)
    for i, c in enumerate(cap_ids):
        n = len(prefix) + len(c)
        seqs[i, : len(prefix)] = prefix
        seqs[i, len(prefix) : n] = torch.tensor(c)
        labels[i, len(prefix) : n] = torch.tensor(c)
        mask[i, :n] = 1
    _logger.info("llava data: %d captions, prompt %d tokens (%.0fs)", len(captions), len(prefix), time.time() - t0)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed + 2)
    warmup = max(1, steps // 20)
    model.train()
    for step in range(steps):
        cur = lr * (step + 1) / warmup if step < warmup else lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = cur
        idx = torch.randint(len(seqs), (batch_size,), generator=gen)
        out = model(
            input_ids=seqs[idx],
            attention_mask=mask[idx],
            pixel_values=clip_normalize(pixels[idx]),
            labels=labels[idx],
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            _logger.info("llava step %d/%d loss %.4f (%.0fs)", step, steps, out.loss.item(), time.time() - t0)
    model.eval()
    model.generation_config.pad_token_id = pad
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    held = make_quadruples(60, seed + 20_000)
    metrics = {
        "safe": score_captions(caption_images(model, processor, [r["safe_image"] for r in held]), held, False),
        "unsafe": score_captions(caption_images(model, processor, [r["unsafe_image"] for r in held]), held, True),
    }
    _logger.info("toy llava held-out: %s", metrics)
    out_dir = Path(out_dir)
    save_fp16(model, str(out_dir))
    processor.save_pretrained(str(out_dir))
    _logger.info("toy llava saved to %s (%.0fs)", out_dir, time.time() - t0)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """``python -m safegen_train.toy.llava --clip DIR --out DIR``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--clip", required=True)
    p.add_argument("--scenes", type=int, default=6_000)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_toy_llava(
        args.out, args.clip, num_scenes=args.scenes, steps=args.steps, batch_size=args.batch_size, seed=args.seed
    )


if __name__ == "__main__":
    main()
