"""The names of the configurable classifiers (``nudenet``, ``q16``, ``i2p``, ``toy``, and any registered).

Kept apart from :mod:`safegen.safety` so that the judges, which check names against this list,
and the package, which loads by name, both read it without importing each other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from safegen.safety.base import OutputClassifier

# name -> "module:attribute" of a factory taking keyword options; imported on first use.
_REGISTRY: dict[str, str | Callable[..., OutputClassifier]] = {
    "i2p": "safegen.safety.q16:I2PClassifier",
    "nudenet": "safegen.safety.nudenet:NudeNetClassifier",
    "q16": "safegen.safety.q16:Q16Classifier",
    "toy": "safegen.safety.toy:ToyClassifier",
}


def register_classifier(name: str, target: str | Callable[..., OutputClassifier]) -> None:
    """Make a classifier loadable by name (``target``: a factory or "module:attr")."""
    _REGISTRY[name] = target


def classifier_names() -> list[str]:
    """The registered (configurable) classifier names; the judges' names are not among them."""
    return sorted(_REGISTRY)


def classifier_factory(name: str) -> Callable[..., OutputClassifier] | None:
    """The factory registered under ``name`` (its module imported now, when given as a string), else None."""
    target = _REGISTRY.get(name)
    if isinstance(target, str):
        module, attr = target.split(":")
        target = getattr(importlib.import_module(module), attr)
    return target
