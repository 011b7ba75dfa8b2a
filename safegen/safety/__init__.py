"""Output safety classifiers behind one interface (:class:`OutputClassifier`).

Two kinds of names load one: configurable classifiers (``nudenet``, ``q16``, ``i2p``,
``toy``; options change their threshold and classes) and judges (:mod:`.judges`), fixed
conventions named after the setting a paper used, e.g. ``nudenet-v3-0.45-exposed9``.
"""

from __future__ import annotations

from typing import Any

from safegen.core.errors import SafegenError
from safegen.safety.base import OutputClassifier, SafetyResult
from safegen.safety.judges import JUDGES, list_judges, load_judge
from safegen.safety.registry import classifier_factory, classifier_names, register_classifier


def list_classifiers() -> list[str]:
    """Every loadable name: the configurable classifiers and the named judges."""
    return sorted(set(classifier_names()) | set(list_judges()))


def load_classifier(name: str, **options: Any) -> OutputClassifier:
    """Build a classifier by registry name, e.g. ``load_classifier("nudenet", threshold=0.6)``."""
    factory = classifier_factory(name)
    if factory is None and name in JUDGES:
        return load_judge(name, **options)
    if factory is None:
        raise SafegenError(f"unknown classifier '{name}'; choose one of: {', '.join(list_classifiers())}")
    return factory(**options)


__all__ = ["OutputClassifier", "SafetyResult", "list_classifiers", "load_classifier", "register_classifier"]
