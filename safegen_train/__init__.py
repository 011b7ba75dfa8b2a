"""safegen_train: Safe-CLIP fine-tuning, from safe/unsafe quadruples to an exported encoder.

Modules: ``config`` (TrainConfig, LossConfig), ``data`` (readers, dataset, sampler),
``losses`` (SafeCLIPLoss), ``model`` (load_clip, SafeCLIPModule), ``trainer`` (fit),
``validation`` (retrieval table), ``export`` (merged CLIP folders), ``cli``
(``safegen-train``). Imports only safegen's public modules; heavy stacks load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LossConfig", "SafeCLIPLoss", "TrainConfig", "export_checkpoint", "fit", "load_records"]

_LAZY = {
    "LossConfig": "config",
    "SafeCLIPLoss": "losses",
    "TrainConfig": "config",
    "export_checkpoint": "export",
    "fit": "trainer",
    "load_records": "data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'safegen_train' has no attribute {name!r}")
