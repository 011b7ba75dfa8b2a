"""State-dict helpers shared by the encoder loader, LoRA merging and open_clip conversion.

Kept apart from :mod:`safegen.models.encoders` so that :mod:`~safegen.models.lora` and
:mod:`~safegen.models.open_clip_convert` can use them without importing the loader that
imports them (the cycle this module breaks).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from safegen.core.errors import SafegenError

# Key of each tower's projection and prefix of its modules inside a transformers CLIPModel.
PROJECTION_KEYS = {"text": "text_projection.weight", "vision": "visual_projection.weight"}
TOWER_PREFIX = {"text": "text_model.", "vision": "vision_model."}


def tower_state_dict_key(key: str, tower: str) -> str | None:
    """Canonical name of one state-dict key of a CLIP tower module (None: not part of the tower)."""
    prefix, proj_key = TOWER_PREFIX[tower], PROJECTION_KEYS[tower]
    if key == proj_key:
        return "projection.weight"
    if key.startswith(prefix):
        return key[len(prefix) :]
    if key.startswith(("embeddings.", "encoder.", "final_layer_norm.", "pre_layrnorm.", "post_layernorm.")):
        return key
    return None


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling arbitrary objects."""
    path = Path(path)
    if path.suffix == ".safetensors":
        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses pickles carrying code: say so plainly
            raise SafegenError(
                f"cannot read '{path}' safely ({type(exc).__name__}); convert it to safetensors"
            ) from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    # Checkpoints saved from DDP carry a "module." prefix.
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
