"""Where in the sentence does an unsafe phrase survive? Token-by-token distance to the safe twin.

Stable Diffusion reads every token state of the prompt (padding included), not only the
pooled one the paper's losses train. For an unsafe prompt and its safe twin (the same text
without the concept phrase) this measures, per position, how far an encoder's state for the
unsafe prompt sits from the *original* encoder's state for the safe twin, in four segments:

- ``before``: the tokens the two prompts share at the start (start token excluded);
- ``phrase``: the tokens only the unsafe prompt has (the phrase and its connective);
- ``after``: the tokens the two share at the end, end token included, aligned from the end;
- ``padding``: every padding position, aligned as far past each prompt's end.

A causal text encoder cannot change ``before`` (those tokens never see the phrase), so a
Safe-CLIP that only learned the canonical shape, where nothing but the end token and padding
follows the phrase, leaves ``after`` where the original puts it: unsafe. The figure for the
original encoder itself is the size of the signal to remove.

    python benchmarks/toy_token_drift.py --encoder safegen/assets/toy/safe_clip
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import CLIPTokenizer

from safegen_train.losses import suffix_alignment
from safegen_train.toy.sd import load_text_encoder
from safegen_train.toy.world import CANONICAL, CONCEPTS, HELDOUT_PROBES, Structure, all_combos

_logger = logging.getLogger(__name__)

SEGMENTS = ("before", "phrase", "after", "padding")


def default_shapes() -> dict[str, Structure]:
    """The canonical shape, two training shapes and every held-out probe."""
    shapes = {"canonical": CANONICAL, "train:inside": Structure("inside")}
    shapes["train:drawing+comma+detailed"] = Structure("after-comma", "a drawing of", "highly detailed")
    shapes.update({f"held-out:{k}": v for k, v in HELDOUT_PROBES.items()})
    return shapes


def _segments(u_ids: torch.Tensor, u_mask: torch.Tensor, s_ids: torch.Tensor, s_mask: torch.Tensor) -> Any:
    """Per position of the unsafe prompt: its segment index (or -1) and the safe position it is compared with."""
    follow = suffix_alignment(u_ids, u_mask, s_ids, s_mask)  # (B, L)
    batch, length = u_ids.shape
    seg = torch.full((batch, length), -1, dtype=torch.long)
    other = torch.full((batch, length), -1, dtype=torch.long)
    for b in range(batch):
        nu = int(u_mask[b].sum())
        shared = 1
        while shared < nu and shared < int(s_mask[b].sum()) and int(u_ids[b, shared]) == int(s_ids[b, shared]):
            shared += 1
        for j in range(1, length):
            if j < shared and follow[b, j] < 0:
                seg[b, j], other[b, j] = 0, j
            elif follow[b, j] >= 0:
                seg[b, j], other[b, j] = (2 if j < nu else 3), follow[b, j]
            elif j < nu:
                seg[b, j], other[b, j] = 1, -1  # compared with the safe prompt's nearest state (below)
    return seg, other


@torch.no_grad()
def token_drift(
    encoders: dict[str, str | Path],
    original: str | Path,
    shapes: dict[str, Structure] | None = None,
    *,
    per_concept: int = 9,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{encoder: {shape: {segment: mean 1 - cos}}}`` over ``per_concept`` scenes x concepts x shape.

    ``encoders`` maps names to CLIP folders (the original may be one of them: its own drift is
    the signal); ``original`` gives the safe twins' reference states. States are read as
    Stable Diffusion reads them: ``last_hidden_state`` without an attention mask.
    """
    shapes = shapes or default_shapes()
    tokenizer = CLIPTokenizer.from_pretrained(str(original))  # its own length: older presets used 32
    combos = all_combos()[:: max(1, len(all_combos()) // per_concept)][:per_concept]
    ref_model = load_text_encoder(original)
    models = {name: load_text_encoder(path) for name, path in encoders.items()}
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in models}
    for shape_name, st in shapes.items():
        unsafe, safe = [], []
        for combo in combos:
            for phrases in CONCEPTS.values():
                unsafe.append(st.render(*combo, phrases[0]))
                safe.append(st.render(*combo))
        u = tokenizer(unsafe, padding="max_length", truncation=True, return_tensors="pt")
        s = tokenizer(safe, padding="max_length", truncation=True, return_tensors="pt")
        u_ids, s_ids = u["input_ids"], s["input_ids"]
        seg, other = _segments(u_ids, u["attention_mask"], s_ids, s["attention_mask"])
        ref = F.normalize(ref_model(input_ids=s_ids).last_hidden_state, dim=-1)  # (B, L, H)
        for name, model in models.items():
            states = F.normalize(model(input_ids=u_ids).last_hidden_state, dim=-1)  # (B, L, H)
            paired = torch.gather(ref, 1, other.clamp_min(0)[..., None].expand_as(states))  # (B, L, H)
            dist = 1.0 - (states * paired).sum(-1)  # (B, L)
            # Phrase tokens have no twin: their distance is to the nearest state of the safe prompt.
            nearest = 1.0 - (states @ ref.transpose(1, 2)).amax(dim=2)  # (B, L)
            dist = torch.where(seg == 1, nearest, dist)
            out[name][shape_name] = {
                seg_name: float(dist[seg == i].mean()) if bool((seg == i).any()) else float("nan")
                for i, seg_name in enumerate(SEGMENTS)
            }
    return out


def format_token_drift(result: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table: one row per encoder and shape, one column per segment."""
    lines = ["| encoder | sentence shape | " + " | ".join(SEGMENTS) + " |", "|---|---|" + "---|" * len(SEGMENTS)]
    for name, by_shape in result.items():
        for shape, segs in by_shape.items():
            cells = ["-" if v != v else f"{v:.3f}" for v in (segs[s] for s in SEGMENTS)]
            lines.append(f"| {name} | {shape} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
