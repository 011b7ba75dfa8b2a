"""Output safety classifiers behind one interface (:class:`OutputClassifier`).

Two kinds of names load one: configurable classifiers (``nudenet``, ``q16``, ``i2p``,
``toy``; options change their threshold and classes) and judges (:mod:`.judges`), fixed
conventions named after the setting a paper used, e.g. ``nudenet-v3-0.45-exposed9``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from safegen.safety.base import OutputClassifier, SafetyResult

# name -> "module:attribute" of a factory taking keyword options; imported on first use.
_REGISTRY: dict[str, str] = {
    "i2p": "safegen.safety.q16:I2PClassifier",
    "nudenet": "safegen.safety.nudenet:NudeNetClassifier",
    "q16": "safegen.safety.q16:Q16Classifier",
    "toy": "safegen.safety.toy:ToyClassifier",
}


def register_classifier(name: str, target: str | Callable[..., OutputClassifier]) -> None:
    """Make a classifier loadable by name (``target``: a factory or "module:attr")."""
    _REGISTRY[name] = target


def list_classifiers() -> list[str]:
    """Every loadable name: the configurable classifiers and the named judges."""
    from safegen.safety.judges import list_judges

    return sorted(set(_REGISTRY) | set(list_judges()))


def load_classifier(name: str, **options: Any) -> OutputClassifier:
    """Build a classifier by registry name, e.g. ``load_classifier("nudenet", threshold=0.6)``."""
    import importlib

    from safegen.core.errors import SafegenError
    from safegen.safety.judges import JUDGES, load_judge

    target = _REGISTRY.get(name)
    if target is None and name in JUDGES:
        return load_judge(name, **options)
    if target is None:
        raise SafegenError(f"unknown classifier '{name}'; choose one of: {', '.join(list_classifiers())}")
    if isinstance(target, str):
        module, attr = target.split(":")
        target = getattr(importlib.import_module(module), attr)
    return target(**options)


__all__ = ["OutputClassifier", "SafetyResult", "list_classifiers", "load_classifier", "register_classifier"]
