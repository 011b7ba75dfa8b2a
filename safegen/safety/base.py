"""One interface for output classifiers: images in, per-image scores and a flag out.

Unsafe outputs are flagged, never silently replaced: what to do with a flagged image
(keep, blur, black out, drop) is the caller's policy, recorded next to the scores.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SafetyResult:
    """The verdict on one image.

    Args:
        unsafe: whether ``score`` passed the classifier's threshold (see :meth:`OutputClassifier.flags`).
        score: the classifier's unsafe score in [0, 1] (the largest over its unsafe labels).
        labels: score per label the classifier reports (unsafe and informative ones).
    """

    unsafe: bool
    score: float
    labels: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OutputClassifier(abc.ABC):
    """Base class of image safety classifiers used by ``--check``, batch jobs and evaluation."""

    #: registry name, e.g. "nudenet"
    name: str = "base"

    def __init__(self, threshold: float = 0.5, strict: bool = False):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        # Papers differ on the edge: UnlearnDiffAtk and RECE flag score > threshold, I2P's
        # NudeNet score >= threshold. A named judge records which one it reproduces.
        self.strict = strict

    def flags(self, score: float) -> bool:
        """Whether ``score`` is unsafe under this classifier's rule (``>`` when strict, else ``>=``)."""
        return score > self.threshold if self.strict else score >= self.threshold

    @abc.abstractmethod
    def classify(self, images: Sequence[Any]) -> list[SafetyResult]:
        """Score PIL images; one result per image, in order."""

    def describe(self) -> dict[str, Any]:
        """What an evaluation must record to be reproducible (name, version, thresholds)."""
        return {"name": self.name, "threshold": self.threshold}

    def __call__(self, images: Sequence[Any]) -> list[SafetyResult]:
        return self.classify(images)
