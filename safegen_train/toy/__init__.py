"""The toy world and the scripts that train every toy model of the ``toy`` preset.

``make_quadruples(n, seed)`` is the contract the rest of the project relies on; the
trainers live in submodules and are run by ``python -m safegen_train.toy.build``.
"""

from safegen_train.toy.world import (
    BACKGROUNDS,
    COLOURS,
    CONCEPTS,
    HELDOUT_PHRASES,
    PRETRAINING_PHRASES,
    SHAPES,
    UNSAFE_WORDS,
    Scene,
    all_combos,
    make_quadruples,
    parse_caption,
    render_scene,
    safe_caption,
    sample_scenes,
    unsafe_caption,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "CONCEPTS",
    "HELDOUT_PHRASES",
    "PRETRAINING_PHRASES",
    "SHAPES",
    "UNSAFE_WORDS",
    "Scene",
    "all_combos",
    "make_quadruples",
    "parse_caption",
    "render_scene",
    "safe_caption",
    "sample_scenes",
    "unsafe_caption",
]
