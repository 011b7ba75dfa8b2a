"""Plain helpers shared by the `safegen serve` tests (test_serve_api, test_serve_limits); fixtures live in conftest.py.

Apart from helpers.py so that only the serve tests import safegen.serve.
"""

from __future__ import annotations

import threading

from safegen.serve import ServeConfig
from safegen.serve.engines import ImageEngine

FAST = {"steps": 2, "size": "32x32"}  # request fields: 2 steps at 32x32


class GatedEngine(ImageEngine):
    """An ImageEngine whose calls wait for ``gate`` and record their batch sizes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[int] = []
        self.entered = threading.Event()

    def render(self, jobs):
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        self.calls.append(len(jobs))
        return super().render(jobs)


def make_engine(pipes, *, classifier=None, policy="blur", compare=False, cls=ImageEngine):
    """An engine on conftest's ``tiny_pipes`` (safe, original); the original only with ``compare``."""
    safe, original = pipes
    return cls(
        safe,
        original=original if compare else None,
        classifier=classifier,
        policy=policy,
        model_id="tiny",
        safe_encoder_id="tiny/safe",
        classifier_name=getattr(classifier, "name", None),
    )


def config(**kw):
    """A ServeConfig for the tiny models: 2 steps, no batching wait, no output classifier, sides up to 64 px."""
    base = dict(steps=2, max_wait_ms=0, check=None, max_size=64)
    base.update(kw)
    return ServeConfig(**base)
