"""Shared fixtures: tiny models built in code and saved once per test session."""

from __future__ import annotations

import os

import pytest

# Any accidental download must fail at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def in_ci() -> bool:
    """True under CI (``CI`` set to anything but empty/0/false, as CI services and .ci/run do)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs(available, reason=...): skip when a dependency is missing; under CI fail instead, "
        "so a green CI run never hides a test the suite depends on",
    )


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        if not mark.args[0]:
            reason = mark.kwargs.get("reason", "a dependency is missing")
            if in_ci():
                pytest.fail(f"CI runs every test, and this one cannot run: {reason}", pytrace=False)
            pytest.skip(reason)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for the rest of the module, then back to what it was.

    The tiny models gain nothing from more threads, and on a shared 2-core machine OpenMP
    spin contention makes their small matmuls up to 10x slower. Use it from a module's
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` or as an argument of the module
    fixture that builds the models.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_safe_pipe(one_thread):
    """A tiny SafeStableDiffusionPipeline in memory, one per module (its tests run 2 steps at 32x32)."""
    from safegen import SafeStableDiffusionPipeline
    from safegen.testing import tiny_sd_pipeline

    return tiny_sd_pipeline(cls=SafeStableDiffusionPipeline)


@pytest.fixture(scope="module")
def train_world(tmp_path_factory):
    """A tiny CLIP folder and 8 training quadruples with images, one per module (its runs write under root)."""
    from helpers import make_clip_folder, make_jsonl

    root = tmp_path_factory.mktemp("train_world")
    return {"root": root, "clip": make_clip_folder(root / "clip"), "train": make_jsonl(root / "data", 8)}


@pytest.fixture(scope="module")
def tiny_pipes(one_thread):
    """Two tiny SafeStableDiffusionPipelines (safe, original), one pair per module, for the `safegen serve` tests."""
    import torch

    from safegen import SafeStableDiffusionPipeline
    from safegen.testing import tiny_sd_pipeline

    safe = tiny_sd_pipeline(seed=0, cls=SafeStableDiffusionPipeline)
    original = tiny_sd_pipeline(seed=0, cls=SafeStableDiffusionPipeline)
    # A different text encoder stands in for "the original" so comparisons can tell them apart.
    torch.manual_seed(7)
    for p in original.text_encoder.parameters():
        p.data.normal_(0, 0.2)
    return safe, original


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny StableDiffusionPipeline saved as a plain diffusers folder."""
    from safegen.testing import tiny_sd_pipeline

    path = tmp_path_factory.mktemp("tiny_sd")
    tiny_sd_pipeline(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny transformers CLIPModel folder (seed 5: different weights from the SD text encoder)."""
    from safegen.testing import tiny_clip_model

    path = tmp_path_factory.mktemp("tiny_clip")
    tiny_clip_model(seed=5).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny CLIPModel (seed 3) saved with its processor, one per module: what Q16 and `safegen retrieve` load.

    (``tiny_clip_dir`` is another CLIP, seed 5, with no processor files.)
    """
    from safegen.testing import tiny_clip_model, tiny_clip_processor

    path = tmp_path_factory.mktemp("clip")
    tiny_clip_model(seed=3).save_pretrained(path)
    tiny_clip_processor().save_pretrained(path)
    return path
