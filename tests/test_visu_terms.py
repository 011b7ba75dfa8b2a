"""ViSU unsafe-image paths resolve as the release wrote them, and runs whose loss terms get no samples are refused."""

from __future__ import annotations

import json

import pytest
from helpers import base_config, make_clip_folder, make_jsonl
from PIL import Image

from safegen_train.config import LossConfig
from safegen_train.data import (
    DataError,
    check_term_coverage,
    load_records,
    read_visu,
    term_sample_counts,
)


def _visu(tmp_path, nsfw_paths):
    coco = tmp_path / "coco" / "val2017"
    coco.mkdir(parents=True)
    data = {}
    for i, nsfw in enumerate(nsfw_paths):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(coco / f"{i + 1:012d}.jpg")
        data[str(i)] = {"coco_id": i + 1, "nsfw_im_path": nsfw, "safe": f"a cat {i}", "nsfw": f"a bloody cat {i}"}
    path = tmp_path / "visu" / "visu_train.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"info": {}, "data": data}))
    return path, tmp_path / "coco"


def test_relative_unsafe_paths_default_to_the_json_folder(tmp_path):
    path, coco = _visu(tmp_path, ["nsfw/0.png", "nsfw/1.png"])
    (path.parent / "nsfw").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8)).save(path.parent / "nsfw" / f"{i}.png")
    records = read_visu(path, coco_root=coco)  # only coco_root: the unsafe images must still be found
    assert all(r.unsafe_image and r.unsafe_image.endswith(f"nsfw/{i}.png") for i, r in enumerate(records))
    assert all(r.safe_image for r in records)


def test_release_absolute_paths_relocate_under_unsafe_image_root(tmp_path):
    path, coco = _visu(tmp_path, ["/leonardo/work/visu/imgs/a.png", "/leonardo/work/visu/imgs/b.png"])
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(moved / name)
    records = read_visu(path, coco_root=coco, unsafe_image_root=moved)
    assert [r.unsafe_image for r in records] == [str(moved / "a.png"), str(moved / "b.png")]


def test_missing_unsafe_images_are_an_error_not_silently_text_only(tmp_path):
    path, coco = _visu(tmp_path, ["/nowhere/a.png", "/nowhere/b.png"])
    with pytest.raises(DataError, match="nsfw_im_path.*unsafe_image_root"):
        read_visu(path, coco_root=coco)
    assert load_records(path, coco_root=coco, images="ignore")[0].unsafe_image is None


def test_term_counts_and_refusal():
    from safegen_train.data import Record

    recs = [Record(safe_text="a", unsafe_text="b", safe_image="s.png", where=f"r{i}") for i in range(3)]
    counts = term_sample_counts(recs, LossConfig(), ["text", "vision"])
    assert counts["text_safe"] == 3 and counts["vision_safe"] == 3
    assert counts["vision_unsafe"] == 0 and counts["ref_text_vs_unsafe_image"] == 0
    with pytest.raises(DataError, match="ref_text_vs_unsafe_image, vision_unsafe.*allow_empty_loss_terms"):
        check_term_coverage(counts, "d.json", text_only=False, allow_empty=False)
    check_term_coverage(counts, "d.json", text_only=False, allow_empty=True)
    check_term_coverage(counts, "d.json", text_only=True, allow_empty=False)
    off = LossConfig(vision_unsafe=0.0, ref_text_vs_unsafe_image=0.0)
    check_term_coverage(term_sample_counts(recs, off, ["text", "vision"]), "d", text_only=False, allow_empty=False)
    assert set(term_sample_counts(recs, LossConfig(), ["text"])) == {
        "text_safe",
        "text_unsafe",
        "safe_text_vs_ref_image",
        "unsafe_text_vs_ref_image",
    }


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("terms")
    clip = make_clip_folder(root / "clip")
    full = make_jsonl(root / "data", 8)
    safe_only = root / "data" / "safe_only.jsonl"
    rows = [json.loads(x) for x in full.read_text().splitlines()]
    safe_only.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "unsafe_image"}) + "\n" for r in rows))
    return root, clip, full, safe_only


def test_fit_refuses_before_training_and_logs_term_counts(small_world, tmp_path):
    from safegen_train.trainer import fit

    root, clip, full, safe_only = small_world
    with pytest.raises(DataError, match="vision_unsafe"):
        fit(base_config(tmp_path / "a", clip, safe_only, max_steps=1))
    assert not (tmp_path / "a" / "run" / "metrics.jsonl").exists()
    fit(base_config(tmp_path / "b", clip, safe_only, max_steps=1, allow_empty_loss_terms=True))
    fit(base_config(tmp_path / "c", clip, full, max_steps=1))
    first = json.loads((tmp_path / "c" / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["term_samples"]["vision_unsafe"] == 8 and first["term_samples"]["text_safe"] == 8
