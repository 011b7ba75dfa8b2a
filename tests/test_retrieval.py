"""Recall@K and the paper's table, the persistent index, SafeRetriever and `safegen retrieve`."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.core.errors import SafegenError
from safegen.retrieval.retriever import (
    RetrievalIndex,
    SafeRetriever,
    format_retrieval_table,
    recall_at_k,
    recall_sum,
    retrieval_table,
)
from safegen.testing import tiny_clip_model, tiny_clip_processor

runner = CliRunner()
COLORS = ("red", "green", "blue", "yellow")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("images")
    for color in COLORS:
        Image.new("RGB", (40, 36), color).save(path / f"{color}.png")
    return path


@pytest.fixture()
def retriever():
    return SafeRetriever(tiny_clip_model(seed=3), tiny_clip_processor(), model_id="tiny-clip", batch_size=3)


# ----------------------------------------------------------------------------- metric


def test_recall_matches_a_hand_computation():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    gallery = torch.tensor([[0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    # cosine: q0 -> (0, 0, 1): own item 0 has two items at least as close -> rank 2
    #         q1 -> (1, 1, 0): own item 1 ties with item 0, ties count against -> rank 1
    #         q2 -> (0, 0, 1): own item 2 is the best -> rank 0
    assert recall_at_k(queries, gallery, ks=(1, 2, 3)) == pytest.approx({1: 100 / 3, 2: 200 / 3, 3: 100.0})


def test_retrieval_table_uses_recall_at_k_for_every_gallery():
    g = torch.Generator().manual_seed(0)
    st, ut, sv, ug = (torch.randn(12, 8, generator=g) for _ in range(4))
    table = retrieval_table(st, ut, sv, ug, ks=(1, 5))
    assert list(table) == ["S-V", "S-G", "U-V", "U-G"]
    assert table["S-G"]["t2i"] == recall_at_k(st, ug, (1, 5))
    assert table["U-V"]["i2t"] == recall_at_k(sv, ut, (1, 5))
    expected = sum(
        recall_at_k(a, b, (1,))[1] for t, im in ((st, sv), (st, ug), (ut, sv)) for a, b in ((t, im), (im, t))
    )
    assert recall_sum(table) == pytest.approx(expected)
    assert "U-G  i2t  R@1" in format_retrieval_table(table)
    # Without generated images only the galleries with real images remain.
    partial = retrieval_table(st, ut, sv, None)
    assert list(partial) == ["S-V", "U-V"] and list(partial["S-V"]) == ["t2i", "i2t"]
    assert recall_sum(retrieval_table(st, ut)) is None


# ----------------------------------------------------------------------------- index


def _items(prefix: str, n: int, kind: str = "image"):
    return [{"id": f"{prefix}{i}", "kind": kind, "source": f"/data/{prefix}{i}"} for i in range(n)]


def test_index_persistence_and_incremental_add(tmp_path):
    g = torch.Generator().manual_seed(1)
    first = torch.randn(5, 16, generator=g)
    index = RetrievalIndex(model="m")
    assert index.add(first, _items("a", 5)) == 5
    index.save(tmp_path)

    loaded = RetrievalIndex.load(tmp_path)
    assert len(loaded) == 5 and loaded.model == "m" and loaded.dim == 16
    assert torch.allclose(loaded.embeddings, torch.nn.functional.normalize(first, dim=-1))
    hit = loaded.search(first[3], k=2)[0][0]
    assert (hit.rank, hit.id, hit.kind) == (1, "a3", "image") and hit.score == pytest.approx(1.0)

    # Incremental add: known ids are skipped, new rows appended.
    more = torch.randn(3, 16, generator=g)
    assert loaded.add(torch.cat([first[:2], more]), _items("a", 2) + _items("t", 3, "text")) == 3
    loaded.save(tmp_path)
    again = RetrievalIndex.load(tmp_path)
    assert [it["id"] for it in again.items] == ["a0", "a1", "a2", "a3", "a4", "t0", "t1", "t2"]
    assert again.generation == 2
    # an incremental save writes only the new rows, to a new part file
    assert sorted(p.name for p in tmp_path.glob("embeddings-*")) == [
        "embeddings-000001.safetensors",
        "embeddings-000002.safetensors",
    ]
    assert torch.allclose(again.embeddings[5:], torch.nn.functional.normalize(more, dim=-1))
    texts_only = again.search(more[1], k=10, kinds=("text",))[0]
    assert [h.id for h in texts_only][0] == "t1" and {h.kind for h in texts_only} == {"text"}
    # removing rows compacts everything into one fresh file
    assert again.remove({("image", "a1")}) == 1
    again.save(tmp_path)
    assert [p.name for p in tmp_path.glob("embeddings-*")] == ["embeddings-000003.safetensors"]
    assert [it["id"] for it in RetrievalIndex.load(tmp_path).items] == ["a0", "a2", "a3", "a4", "t0", "t1", "t2"]


def test_crash_mid_save_leaves_the_previous_index(tmp_path, monkeypatch):
    import safegen.core.io

    index = RetrievalIndex(model="m")
    index.add(torch.randn(4, 8), _items("a", 4))
    index.save(tmp_path)
    index.add(torch.randn(2, 8), _items("b", 2))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the embeddings file and index.json")

    monkeypatch.setattr(safegen.core.io, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path)
    monkeypatch.undo()
    survivor = RetrievalIndex.load(tmp_path)
    assert len(survivor) == 4 and survivor.generation == 1
    index.save(tmp_path)  # the next good save commits and removes the orphaned file
    assert len(RetrievalIndex.load(tmp_path)) == 6
    named = [p["file"] for p in json.loads((tmp_path / "index.json").read_text())["embeddings_files"]]
    assert sorted(p.name for p in tmp_path.glob("embeddings-*")) == sorted(named)  # no orphan left


def test_damaged_index_is_refused_with_the_file_named(tmp_path):
    index = RetrievalIndex(model="m")
    index.add(torch.randn(3, 8), _items("a", 3))
    index.save(tmp_path)
    meta = json.loads((tmp_path / "index.json").read_text())
    meta["count"] = 4
    (tmp_path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(SafegenError, match="describes 4 items but holds 3 records and 3 embeddings"):
        RetrievalIndex.load(tmp_path)
    meta["count"], meta["embeddings_files"][0]["rows"] = 3, 5
    (tmp_path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(SafegenError, match="embeddings-000001.safetensors holds"):
        RetrievalIndex.load(tmp_path)
    with pytest.raises(SafegenError, match="not a retrieval index"):
        RetrievalIndex.load(tmp_path / "nowhere")
    with pytest.raises(SafegenError, match="4-d but the index holds 8-d"):
        index.add(torch.randn(1, 4), _items("z", 1))


# ----------------------------------------------------------------------------- retriever


def test_retriever_indexes_images_and_texts_and_searches(retriever, image_dir, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    files = sorted(image_dir.glob("*.png"))
    report = retriever.add_images([*files, bad])
    assert report.added == 4 and len(report.errors) == 1 and "bad.jpg" in report.errors[0]
    assert retriever.add_texts([f"a {c} square" for c in COLORS]).added == 4
    assert retriever.add_images(files[:2]).skipped == 2

    # Image query for an indexed file: that file first with cosine 1.
    hits = retriever.search(files[2], k=3, target="image")
    assert hits[0].id == str(files[2].resolve()) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    # Cross-modal by default: a text query ranks images only, image queries rank texts only.
    assert {h.kind for h in retriever.search("a red square", k=10)} == {"image"}
    assert {h.kind for h in retriever.search(Image.open(files[0]), k=10)} == {"text"}
    # Embeddings equal a direct CLIPModel call, normalised.
    emb = retriever.encode_texts(["a red square"])
    enc = retriever.processor(text=["a red square"], return_tensors="pt", padding=True)
    direct = retriever.model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    direct = direct if isinstance(direct, torch.Tensor) else direct.pooler_output
    assert torch.allclose(emb, torch.nn.functional.normalize(direct, dim=-1), atol=1e-5)


def test_retriever_round_trip_and_model_check(clip_dir, image_dir, tmp_path):
    files = sorted(image_dir.glob("*.png"))
    built = SafeRetriever.from_pretrained(clip_dir)
    built.add_images(files)
    built.save(tmp_path / "idx")
    reopened = SafeRetriever.from_pretrained(clip_dir, index=tmp_path / "idx")
    assert reopened.search(files[1], k=1)[0].id == str(files[1].resolve())
    with pytest.raises(SafegenError, match="not comparable"):
        SafeRetriever(tiny_clip_model(seed=3), tiny_clip_processor(), model_id="other", index=reopened.index)


# ----------------------------------------------------------------------------- CLI


def test_cli_build_query_add_info(clip_dir, image_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("# captions\na red square\n\na blue square\n")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    idx = tmp_path / "idx"

    res = runner.invoke(
        app,
        ["retrieve", "build", str(idx), str(image_dir), str(tmp_path / "broken.png"), "--texts", str(texts)]
        + ["--model", str(clip_dir), "--device", "cpu"],
    )
    assert res.exit_code == 1, res.output  # one unreadable file: reported, the rest indexed
    assert "broken.png" in res.stderr and "images: 4 added" in res.stderr and "texts: 2 added" in res.stderr

    res = runner.invoke(app, ["retrieve", "query", str(idx), "--text", "a red square", "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [h["rank"] for h in out["hits"]] == [1, 2, 3] and {h["kind"] for h in out["hits"]} == {"image"}

    new_dir = tmp_path / "more"
    new_dir.mkdir()
    Image.new("RGB", (30, 30), "white").save(new_dir / "white.png")
    res = runner.invoke(app, ["retrieve", "add", str(idx), str(new_dir), str(image_dir)])
    assert res.exit_code == 0, res.output
    assert "images: 1 added, 4 already indexed" in res.stderr

    res = runner.invoke(
        app, ["retrieve", "query", str(idx), "--image", str(new_dir / "white.png"), "--target", "image"]
    )
    assert res.exit_code == 0, res.output
    rank, score, kind, source = res.stdout.splitlines()[0].split("\t")
    assert (rank, kind, source) == ("1", "image", str((new_dir / "white.png").resolve()))

    res = runner.invoke(app, ["retrieve", "info", str(idx), "--json"])
    info = json.loads(res.stdout)
    assert (info["items"], info["images"], info["texts"], info["generation"]) == (7, 5, 2, 2)
    assert info["model"] == str(clip_dir.resolve())


def test_cli_usage_and_known_errors(clip_dir, tmp_path):
    res = runner.invoke(app, ["retrieve", "query", str(tmp_path), "--text", "x", "--image", "y.png"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["retrieve", "query", str(tmp_path), "--text", "x"])
    assert res.exit_code == 1 and "holds no index" in res.stderr
    res = runner.invoke(app, ["retrieve", "build", str(tmp_path / "i"), "--texts", str(tmp_path / "none.txt")])
    assert res.exit_code == 2 and "no CLIP model given" in res.output
