"""Data readers (JSONL, ViSU JSON), their error reports, and the sharded batch sampler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_jsonl

from safegen_train.data import DataError, ShardedBatchSampler, load_records, read_jsonl, read_visu


def test_jsonl_relative_and_absolute_image_paths(tmp_path):
    path = make_jsonl(tmp_path / "d", 3)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["safe_image"] = str((tmp_path / "d" / rec["safe_image"]).resolve())  # absolute is accepted too
    path.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n\n")
    records = read_jsonl(path)
    assert len(records) == 3
    assert all(Path(r.safe_image).is_file() and Path(r.unsafe_image).is_file() for r in records)
    assert records[1].safe_image == str(tmp_path / "d" / "img" / "safe_1.png")
    assert records[0].tag == "violence" and records[0].where == "train.jsonl:1"


def test_bad_records_are_listed_with_count_then_skippable(tmp_path):
    path = make_jsonl(tmp_path, 3, images=False)
    bad = [
        "not json",
        json.dumps({"safe_text": "", "unsafe_text": "x"}),
        json.dumps({"safe_text": "a", "unsafe_text": "b", "safe_image": "missing.png"}),
    ] + [json.dumps({"safe_text": "a"})] * 5
    path.write_text(path.read_text() + "\n".join(bad) + "\n")
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    msg = str(err.value)
    assert "8 bad record(s)" in msg and "train.jsonl:4: invalid JSON" in msg
    assert "train.jsonl:5: field 'safe_text'" in msg and "missing.png" in msg and "(and 3 more)" in msg
    assert "skip_bad_records" in msg
    assert len(read_jsonl(path, skip_bad=True)) == 3


def test_empty_split_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no usable records"):
        read_jsonl(empty)
    with pytest.raises(DataError, match="does not exist"):
        load_records(tmp_path / "nope.jsonl")


def test_mixed_image_modalities_refused_or_ignored(tmp_path):
    path = make_jsonl(tmp_path, 4)
    path.write_text(path.read_text() + json.dumps({"safe_text": "a", "unsafe_text": "b"}) + "\n")
    with pytest.raises(
        DataError, match=r"mixes records with and without safe_image: 1 lack safe_image \(train.jsonl:5\)"
    ):
        load_records(path)
    assert len(load_records(path, skip_bad=True)) == 4
    text_only = load_records(path, images="ignore")
    assert len(text_only) == 5 and all(r.safe_image is None for r in text_only)


def test_visu_official_layout(tmp_path):
    coco = tmp_path / "coco"
    (coco / "val2017").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(coco / "val2017" / "000000000042.jpg")
    (tmp_path / "gen").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "gen" / "u0.png")
    data = {
        "info": {"v": 1},
        "data": {
            "0": {"coco_id": 42, "nsfw_im_path": "u0.png", "safe": "a dog", "nsfw": "a dead dog", "tag": "violence"},
            "1": {"coco_id": 7, "nsfw_im_path": "u1.png", "safe": "a cat", "nsfw": "x", "tag": "hate"},
        },
    }
    path = tmp_path / "visu_val.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        read_visu(path, coco_root=coco, unsafe_image_root=tmp_path / "gen")
    assert "visu_val.json[1]" in str(err.value) and "000000000007.jpg" in str(err.value)
    records = read_visu(path, coco_root=coco, unsafe_image_root=tmp_path / "gen", skip_bad=True)
    assert len(records) == 1 and records[0].safe_image.endswith("val2017/000000000042.jpg")
    assert records[0].unsafe_image == str(tmp_path / "gen" / "u0.png") and records[0].unsafe_text == "a dead dog"
    with pytest.raises(DataError, match="unsafe_image_root"):  # unsafe images are never dropped silently
        read_visu(path)
    text_only = read_visu(path, check_images=False)  # text-only, asked for (images: ignore)
    assert len(text_only) == 2 and text_only[1].safe_image is None and text_only[0].unsafe_image is None


def test_sharded_sampler_slices_one_global_order():
    one = ShardedBatchSampler(10, 4, seed=3)
    shards = [ShardedBatchSampler(10, 4, rank=r, world=2, seed=3) for r in range(2)]
    for s in [one, *shards]:
        s.set_epoch(1)
    global_batches = list(one)
    assert len(global_batches) == 2  # 10 // 4, the partial batch dropped
    for b, batch in enumerate(global_batches):
        assert list(shards[0])[b] + list(shards[1])[b] == batch
    one.set_epoch(1, start=1)
    assert list(one) == global_batches[1:]
    one.set_epoch(2)
    assert list(one) != global_batches
    with pytest.raises(DataError, match="fewer than one micro-batch"):
        ShardedBatchSampler(3, 4)
