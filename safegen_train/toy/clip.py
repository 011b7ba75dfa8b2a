"""Train the toy CLIP from scratch on safe AND unsafe pairs of the toy world.

Why both: like web CLIP, the original model must know the unsafe concepts (an unsafe
caption retrieves unsafe images), otherwise there is nothing for Safe-CLIP to remove.
Saved as a transformers ``CLIPModel`` folder with its ``CLIPProcessor``.
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
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from safegen.retrieval.retriever import recall_at_k
from safegen_train.toy.common import (
    TOY_MAX_LENGTH,
    clip_normalize,
    create_toy_tokenizer,
    images_to_uint8,
    save_fp16,
    seed_everything,
    tokenize,
)
from safegen_train.toy.world import (
    CONCEPTS,
    HELDOUT_PROBES,
    IMAGE_SIZE,
    Scene,
    all_combos,
    make_pretraining_quadruples,
    render_scene,
    safe_caption,
    unsafe_caption,
)

_logger = logging.getLogger(__name__)


def create_toy_clip_config(vocab_size: int, bos_id: int, eos_id: int, image_size: int = IMAGE_SIZE) -> Any:
    """The toy CLIP: text 2 layers x 128, ViT patch 8 (16 patch tokens), 3 layers x 128, 128-d joint space."""
    text = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TOY_MAX_LENGTH,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        projection_dim=128,  # also on each tower, so a tower class loads from this CLIPModel folder
    )
    vision = dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
        projection_dim=128,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)


def create_toy_processor(tokenizer: Any, image_size: int = IMAGE_SIZE) -> Any:
    """CLIPProcessor: the toy tokenizer and a CLIP image processor at the world's size."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _pairs(records: list[dict[str, Any]]) -> tuple[list[str], list[Any], list[tuple]]:
    """Flatten quadruples into (text, image, key) pairs, safe and unsafe; key = what is shown."""
    texts, images, keys = [], [], []
    for r in records:
        base = (r["shape"], r["colour"], r["background"])
        texts += [r["safe_text"], r["unsafe_text"]]
        images += [r["safe_image"], r["unsafe_image"]]
        keys += [base + ("safe",), base + (r["tag"],)]
    return texts, images, keys


@torch.no_grad()
def evaluate_clip(model: Any, tokenizer: Any, seed: int = 10_000) -> dict[str, float]:
    """R@1 on one held-out scene per (shape, colour, background): safe and unsafe (blood) galleries."""
    model.eval()
    out = {}
    combos = all_combos()
    # The canonical shape, then one held-out shape ("a photo of" + the concept first + "4k").
    probe = HELDOUT_PROBES["photo+before+4k"]
    for concept in ("safe", "blood", "fire", "gun", "heldout_shape_safe", "heldout_shape_blood"):
        shown = concept.removeprefix("heldout_shape_")
        scenes = [
            Scene(s, c, b, "blood" if shown == "safe" else shown, "", seed + i) for i, (s, c, b) in enumerate(combos)
        ]
        if concept.startswith("heldout_shape_"):
            phrase = None if shown == "safe" else CONCEPTS[shown][0]
            texts = [probe.render(s, c, b, phrase) for s, c, b in combos]
        else:
            texts = [
                safe_caption(s, c, b) if shown == "safe" else unsafe_caption(s, c, b, shown) for s, c, b in combos
            ]
        ims = clip_normalize(images_to_uint8([render_scene(sc, unsafe=shown != "safe") for sc in scenes]))
        t = model.get_text_features(input_ids=tokenize(tokenizer, texts))
        v = model.get_image_features(pixel_values=ims)
        t = getattr(t, "pooler_output", t)
        v = getattr(v, "pooler_output", v)
        r = recall_at_k(t, v, ks=(1, 5))
        out[f"{concept}_t2i_r1"] = r[1]
        out[f"{concept}_i2t_r1"] = recall_at_k(v, t, ks=(1,))[1]
    model.train()
    return out


def train_toy_clip(
    out_dir: str | Path,
    *,
    num_scenes: int = 12_000,
    steps: int = 3_000,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 10,
) -> dict[str, float]:
    """Train the toy CLIP and save it (fp16 safetensors) with its processor; returns held-out R@1."""
    seed_everything(seed)
    t0 = time.time()
    tokenizer = create_toy_tokenizer()
    # Like web CLIP, the original knows every wording and sentence shape, held-out ones included.
    records = make_pretraining_quadruples(num_scenes, seed)
    texts, images, keys = _pairs(records)
    unique_texts = sorted(set(texts))
    text_index = {t: i for i, t in enumerate(unique_texts)}
    text_ids = tokenize(tokenizer, unique_texts)  # (T, L)
    used = int((text_ids != tokenizer.pad_token_id).sum(dim=1).max()) + 1  # longest caption + its end token
    text_ids = text_ids[:, :used]  # padding past the end token never changes the pooled output
    pair_text = torch.tensor([text_index[t] for t in texts])  # (P,)
    key_index = {k: i for i, k in enumerate(sorted(set(keys)))}
    pair_key = torch.tensor([key_index[k] for k in keys])  # (P,)
    pixels = images_to_uint8(images)  # (P, 3, H, W) uint8
    _logger.info("toy CLIP data: %d pairs, %d captions (%.1fs)", len(texts), len(unique_texts), time.time() - t0)

    vocab = tokenizer.get_vocab()
    config = create_toy_clip_config(len(vocab), vocab["<|startoftext|>"], vocab["<|endoftext|>"])
    model = CLIPModel(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    gen = torch.Generator().manual_seed(seed)
    n = len(texts)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        t_emb = model.get_text_features(input_ids=text_ids[pair_text[idx]])
        v_emb = model.get_image_features(pixel_values=clip_normalize(pixels[idx]))
        t_emb = F.normalize(getattr(t_emb, "pooler_output", t_emb), dim=-1)  # (B, D)
        v_emb = F.normalize(getattr(v_emb, "pooler_output", v_emb), dim=-1)  # (B, D)
        logits = model.logit_scale.exp().clamp(max=100) * t_emb @ v_emb.T  # (B, B)
        same = (pair_key[idx][:, None] == pair_key[idx][None, :]).float()  # several positives per row
        target = same / same.sum(dim=1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            _logger.info("clip step %d/%d loss %.4f (%.0fs)", step, steps, loss.item(), time.time() - t0)

    metrics = evaluate_clip(model, tokenizer)
    _logger.info("toy CLIP held-out: %s", metrics)
    out_dir = Path(out_dir)
    save_fp16(model, str(out_dir))
    create_toy_processor(tokenizer).save_pretrained(str(out_dir))
    _logger.info("toy CLIP saved to %s in %.0fs", out_dir, time.time() - t0)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """``python -m safegen_train.toy.clip --out DIR``: train the toy CLIP alone."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--scenes", type=int, default=12_000)
    p.add_argument("--steps", type=int, default=3_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_toy_clip(args.out, num_scenes=args.scenes, steps=args.steps, batch_size=args.batch_size, seed=args.seed)


if __name__ == "__main__":
    main()
