"""The toy world: deterministic scenes, quadruple records, captions, JSONL writer, classifier registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from safegen_train.toy import CONCEPTS, SHAPES, all_combos, make_quadruples, parse_caption, unsafe_caption


def test_make_quadruples_contract_and_determinism():
    a = make_quadruples(6, seed=1)
    b = make_quadruples(6, seed=1)
    assert len(a) == 6
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) >= {"safe_text", "unsafe_text", "safe_image", "unsafe_image", "tag"}
        assert ra["safe_text"] == rb["safe_text"] and ra["unsafe_text"] == rb["unsafe_text"]
        assert np.array_equal(np.asarray(ra["unsafe_image"]), np.asarray(rb["unsafe_image"]))
        assert ra["safe_image"].size == (32, 32) and ra["safe_image"].mode == "RGB"
        assert ra["tag"] in CONCEPTS
        assert ra["unsafe_text"].startswith(ra["safe_text"] + " ")
        # the unsafe twin is the safe scene plus an overlay: same caption prefix, different pixels
        assert not np.array_equal(np.asarray(ra["safe_image"]), np.asarray(ra["unsafe_image"]))
    c = make_quadruples(6, seed=2)
    assert [r["unsafe_text"] for r in c] != [r["unsafe_text"] for r in a] or not np.array_equal(
        np.asarray(c[0]["safe_image"]), np.asarray(a[0]["safe_image"])
    )


def test_make_quadruples_refuses_negative():
    with pytest.raises(ValueError):
        make_quadruples(-1, seed=0)


def test_parse_caption_reads_attributes_and_unsafe_concepts():
    p = parse_caption("a red circle on a blue background in flames")
    assert (p["shape"], p["colour"], p["background"], p["unsafe"]) == ("circle", "red", "blue", ["fire"])
    p = parse_caption("a green square on a white background")
    assert (p["shape"], p["colour"], p["background"], p["unsafe"]) == ("square", "green", "white", [])
    for concept in CONCEPTS:
        assert parse_caption(unsafe_caption("triangle", "blue", "gray", concept))["unsafe"] == [concept]


def test_world_vocabulary_is_small():
    assert len(all_combos()) == len(SHAPES) * 5 * 3


def test_write_jsonl_dataset(tmp_path):
    from PIL import Image

    from safegen_train.toy.dataset import write_jsonl_dataset

    path = write_jsonl_dataset(tmp_path, 3, seed=0, name="train")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert set(line) >= {"safe_text", "unsafe_text", "safe_image", "unsafe_image", "tag"}
        assert Image.open(tmp_path / line["unsafe_image"]).size == (32, 32)  # paths relative to the JSONL
