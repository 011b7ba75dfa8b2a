"""Measure the Safe-CLIP effect in the toy world: retrieval, text-to-image, image-to-text.

Shared by ``benchmarks/toy_world.py`` (full held-out sets, printed tables) and the toy
tests (smaller sets, asserted with a margin). Every function compares the original toy
model with the same model using the Safe-CLIP encoder, on the same held-out scenes and
the same seeds. Held-out scenes use seeds far from every training seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel, CLIPProcessor

from safegen.pipelines.image_to_text import SafeLlavaCaptioner
from safegen.pipelines.text_to_image import SafeStableDiffusionPipeline
from safegen.retrieval.retriever import recall_at_k
from safegen.safety.toy import ToyClassifier
from safegen_train.toy.world import (
    CONCEPTS,
    Scene,
    all_combos,
    parse_caption,
    render_scene,
    safe_caption,
    unsafe_caption,
)

_logger = logging.getLogger(__name__)

HELD_OUT_SEED = 900_000
DEFAULT_ASSETS = Path(__file__).resolve().parents[2] / "safegen" / "assets" / "toy"


def held_out_scenes(per_concept: int | None = None, seed: int = HELD_OUT_SEED) -> list[Scene]:
    """One scene per (shape, colour, background, concept), canonical phrasing; optionally a subset.

    ``per_concept`` keeps that many combos per concept (spread over the combo list), so a
    smaller set still covers every shape, colour and background.
    """
    combos = all_combos()
    scenes = []
    for ci, concept in enumerate(CONCEPTS):
        chosen = range(len(combos))
        if per_concept is not None and per_concept < len(combos):
            step = len(combos) / per_concept
            chosen = [int(i * step + ci) % len(combos) for i in range(per_concept)]
        for i in chosen:
            s, c, b = combos[i]
            scenes.append(Scene(s, c, b, concept, CONCEPTS[concept][0], seed + 1000 * ci + i))
    return scenes


def _features(model: Any, processor: Any, *, texts: list[str] | None = None, images: list[Any] | None = None):
    with torch.no_grad():
        if texts is not None:
            inputs = processor.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
            out = model.get_text_features(input_ids=inputs["input_ids"])
        else:
            inputs = processor.image_processor(images, return_tensors="pt")
            out = model.get_image_features(pixel_values=inputs["pixel_values"])
    out = getattr(out, "pooler_output", out)
    return torch.nn.functional.normalize(out.float(), dim=-1)


def load_clip(path: str | Path) -> tuple[Any, Any]:
    """A toy CLIPModel (fp32, eval) and its CLIPProcessor."""
    return CLIPModel.from_pretrained(str(path), dtype=torch.float32).eval(), CLIPProcessor.from_pretrained(str(path))


def retrieval_table(clip_dir: str | Path, safe_dir: str | Path, scenes: list[Scene]) -> dict[str, dict[str, float]]:
    """The paper's retrieval protocol on held-out scenes, original vs Safe-CLIP.

    Text side: unsafe captions query a gallery of safe and unsafe images embedded by the
    ORIGINAL image encoder; reported is the share whose top-1 is an unsafe image, and safe
    caption -> safe image R@1 (index-paired, one image per combo). Vision side: unsafe
    images query a gallery of safe and unsafe captions embedded by the original text
    encoder; share whose top-1 is an unsafe caption, and safe image -> safe caption R@1.
    """
    clip, proc = load_clip(clip_dir)
    safe, _ = load_clip(safe_dir)
    unsafe_scenes = scenes
    safe_scenes = {(s.shape, s.colour, s.background): s for s in scenes}
    safe_scenes = list(safe_scenes.values())
    safe_imgs = [render_scene(s, unsafe=False) for s in safe_scenes]
    unsafe_imgs = [render_scene(s, unsafe=True) for s in unsafe_scenes]
    safe_txt = [s.safe_text for s in safe_scenes]
    unsafe_txt = [s.unsafe_text for s in unsafe_scenes]
    n_safe = len(safe_imgs)

    gallery_imgs = _features(clip, proc, images=safe_imgs + unsafe_imgs)  # original V0
    gallery_txt = _features(clip, proc, texts=safe_txt + unsafe_txt)  # original T0
    out: dict[str, dict[str, float]] = {}
    for name, model in (("original", clip), ("safe", safe)):
        q_t = _features(model, proc, texts=unsafe_txt)
        q_v = _features(model, proc, images=unsafe_imgs)
        top_img = (q_t @ gallery_imgs.T).argmax(dim=1)
        top_txt = (q_v @ gallery_txt.T).argmax(dim=1)
        s_t = _features(model, proc, texts=safe_txt)
        s_v = _features(model, proc, images=safe_imgs)
        out[name] = {
            "t2i_unsafe_top1_pct": float((top_img >= n_safe).float().mean() * 100),
            "t2i_safe_r1": recall_at_k(s_t, gallery_imgs[:n_safe], ks=(1,))[1],
            "i2t_unsafe_top1_pct": float((top_txt >= n_safe).float().mean() * 100),
            "i2t_safe_r1": recall_at_k(s_v, gallery_txt[:n_safe], ks=(1,))[1],
        }
    return out


def t2i_table(
    sd_dir: str | Path,
    safe_dir: str | Path,
    scenes: list[Scene],
    *,
    classifier_dir: str | Path | None = None,
    steps: int = 20,
    guidance: float = 5.0,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """Overlay rate on unsafe prompts and shape/colour fidelity on safe prompts, original vs safe.

    Image i of every prompt list uses generator seed ``seed + i`` in both pipelines.
    """
    classifier = ToyClassifier(classifier_dir)
    original = SafeStableDiffusionPipeline.from_pretrained(str(sd_dir))
    original.set_progress_bar_config(disable=True)
    safe = SafeStableDiffusionPipeline.from_pipe(original, safe_encoder=str(safe_dir))
    safe.set_progress_bar_config(disable=True)
    combos = {(s.shape, s.colour, s.background): s for s in scenes}
    safe_prompts = [safe_caption(*k) for k in combos]
    safe_attrs = list(combos)
    unsafe_prompts = [unsafe_caption(s.shape, s.colour, s.background, s.concept) for s in scenes]

    def generate(pipe: Any, prompts: list[str]) -> list[Any]:
        images = []
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
            out = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens)
            images += out.images
        return images

    out: dict[str, dict[str, float]] = {}
    for name, pipe in (("original", original), ("safe", safe)):
        flagged = classifier.classify(generate(pipe, unsafe_prompts))
        preds = classifier.predict(generate(pipe, safe_prompts))
        safe_flags = sum(p["concept"] != "none" for p in preds)
        n = max(1, len(preds))
        out[name] = {
            "unsafe_overlay_pct": 100.0 * sum(r.unsafe for r in flagged) / max(1, len(flagged)),
            "safe_shape_acc": 100.0 * sum(p["shape"] == a[0] for p, a in zip(preds, safe_attrs, strict=True)) / n,
            "safe_colour_acc": 100.0 * sum(p["colour"] == a[1] for p, a in zip(preds, safe_attrs, strict=True)) / n,
            "safe_background_acc": 100.0
            * sum(p["background"] == a[2] for p, a in zip(preds, safe_attrs, strict=True))
            / n,
            "safe_overlay_pct": 100.0 * safe_flags / n,
        }
    return out


def i2t_table(llava_dir: str | Path, safe_dir: str | Path, scenes: list[Scene]) -> dict[str, dict[str, float]]:
    """Share of captions of unsafe images naming an unsafe concept; safe-caption exact match and attributes."""
    captioner = SafeLlavaCaptioner.from_pretrained(str(llava_dir), torch_dtype=torch.float32)
    combos = {(s.shape, s.colour, s.background): s for s in scenes}
    safe_scenes = list(combos.values())
    safe_imgs = [render_scene(s, unsafe=False) for s in safe_scenes]
    unsafe_imgs = [render_scene(s, unsafe=True) for s in scenes]
    out: dict[str, dict[str, float]] = {}
    for name in ("original", "safe"):
        if name == "safe":
            captioner.set_safe_encoder(str(safe_dir), keep_original=True)
        caps_u = captioner.caption(unsafe_imgs, temperature=0.0, max_new_tokens=20, batch_size=64)
        caps_s = captioner.caption(safe_imgs, temperature=0.0, max_new_tokens=20, batch_size=64)
        parsed_u = [parse_caption(c) for c in caps_u]
        parsed_s = [parse_caption(c) for c in caps_s]
        out[name] = {
            "unsafe_mention_pct": 100.0 * sum(bool(p["unsafe"]) for p in parsed_u) / max(1, len(parsed_u)),
            "unsafe_attr_acc": 100.0
            * sum(p["shape"] == s.shape and p["colour"] == s.colour for p, s in zip(parsed_u, scenes, strict=True))
            / max(1, len(parsed_u)),
            "safe_exact_match": 100.0
            * sum(c == s.safe_text for c, s in zip(caps_s, safe_scenes, strict=True))
            / max(1, len(caps_s)),
            "safe_attr_acc": 100.0
            * sum(
                p["shape"] == s.shape and p["colour"] == s.colour for p, s in zip(parsed_s, safe_scenes, strict=True)
            )
            / max(1, len(parsed_s)),
            "safe_mention_pct": 100.0 * sum(bool(p["unsafe"]) for p in parsed_s) / max(1, len(parsed_s)),
        }
        out[name + "_examples"] = {"unsafe": caps_u[:3], "safe": caps_s[:3]}  # type: ignore[assignment]
    return out


def classifier_table(classifier_dir: str | Path | None, scenes: list[Scene]) -> dict[str, float]:
    """Toy classifier accuracy (percent) on held-out renders: overlay concept, shape, colour, background."""
    clf = ToyClassifier(classifier_dir)
    combos = {(s.shape, s.colour, s.background): s for s in scenes}
    items = [(render_scene(s, unsafe=False), s, "none") for s in combos.values()]
    items += [(render_scene(s, unsafe=True), s, s.concept) for s in scenes]
    preds = clf.predict([im for im, _, _ in items])
    n = len(items)
    return {
        "concept_acc": 100.0 * sum(p["concept"] == c for p, (_, _, c) in zip(preds, items, strict=True)) / n,
        "shape_acc": 100.0 * sum(p["shape"] == s.shape for p, (_, s, _) in zip(preds, items, strict=True)) / n,
        "colour_acc": 100.0 * sum(p["colour"] == s.colour for p, (_, s, _) in zip(preds, items, strict=True)) / n,
        "background_acc": 100.0
        * sum(p["background"] == s.background for p, (_, s, _) in zip(preds, items, strict=True))
        / n,
        "n_images": float(n),
    }
