"""The generate step of a batch run: prompts encoded once and cached, one pipeline call per batch.

Each image keeps its own CPU generator seeded with its own seed, so an image is the same
whether it is made alone or in a batch, on any device.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from safegen.jobs.plan import ImageJob


class PromptCache:
    """Encodes each distinct (prompt, negative prompt) once and keeps the embeddings (LRU)."""

    def __init__(self, pipe: Any, device: Any, max_items: int = 1024):
        self.pipe, self.device, self.max_items = pipe, device, max_items
        self._cache: OrderedDict[tuple[str, str, bool], tuple[Any, ...]] = OrderedDict()
        self.encoded = 0

    def embeddings(self, prompts: Sequence[str], negative: str, cfg: bool) -> dict[str, Any]:
        parts = []
        for prompt in prompts:
            key = (prompt, negative, cfg)
            hit = self._cache.get(key)
            if hit is None:
                with torch.no_grad():
                    hit = tuple(
                        self.pipe.encode_prompt(
                            prompt=prompt,
                            device=self.device,
                            num_images_per_prompt=1,
                            do_classifier_free_guidance=cfg,
                            negative_prompt=negative,
                        )
                    )
                self.encoded += 1
                self._cache[key] = hit
                if len(self._cache) > self.max_items:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            parts.append(hit)
        names = ["prompt_embeds", "negative_prompt_embeds"]
        if len(parts[0]) == 4:  # SDXL: pooled embeddings too
            names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
        kwargs = {}
        for i, name in enumerate(names):
            if parts[0][i] is not None:
                kwargs[name] = torch.cat([p[i] for p in parts])  # (B, T, D) or (B, D)
        return kwargs


def generate_images(pipe: Any, batch: list[ImageJob], cache: PromptCache, call_kwargs: dict[str, Any]) -> list[Any]:
    """The PIL images of one batch (jobs sharing their settings), in the batch's order."""
    s = batch[0].settings
    unet = getattr(pipe, "unet", None)
    cfg_on = s.guidance > 1 and getattr(getattr(unet, "config", None), "time_cond_proj_dim", None) is None
    if hasattr(pipe, "encode_prompt"):
        kwargs = cache.embeddings([j.prompt for j in batch], s.negative_prompt, cfg_on)
    else:  # pipelines without prompt_embeds (diffusers' deprecated SLD) take the text itself
        kwargs = {"prompt": [j.prompt for j in batch]}
        if s.negative_prompt:
            kwargs["negative_prompt"] = [s.negative_prompt] * len(batch)
    # One CPU generator per image: the same noise whatever the batch or the device.
    generators = [torch.Generator("cpu").manual_seed(j.seed) for j in batch]
    out = pipe(
        num_inference_steps=s.steps,
        guidance_scale=s.guidance,
        width=s.width,
        height=s.height,
        generator=generators,
        output_type="pil",
        **kwargs,
        **call_kwargs,
    )
    return list(out.images)


def scheduler_signature(scheduler: Any) -> str:
    """The scheduler's class and a hash of its config: part of every content key of a run."""
    sched_config = dict(getattr(scheduler, "config", None) or {})
    sched_text = json.dumps(sched_config, sort_keys=True, default=str)
    return f"{type(scheduler).__name__}:{hashlib.sha256(sched_text.encode()).hexdigest()[:16]}"
