"""The whole data pipeline in the toy world, offline: train the tiny rewriter, rewrite toy captions,
filter them with the toy CLIP, render with the toy SD (original encoder) judged by the toy classifier,
build quadruples, and fit a Safe-CLIP on them for a couple of steps."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from safegen.models.presets import get_preset
from safegen_train.cli import app
from safegen_train.toy.rewriter import toy_taxonomy, train_toy_rewriter
from safegen_train.toy.world import CONCEPTS, all_combos, safe_caption

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def _invoke(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def toy_rewriter():
    """The toy preset's shipped rewriter (trained by the toy build: 300 steps) and its build record."""
    from safegen.models.presets import ASSETS_DIR

    path = ASSETS_DIR / "toy" / "rewriter"
    record = json.loads((ASSETS_DIR / "toy" / "build.json").read_text())["stages"]["rewriter"]["result"]
    return path, record


def test_toy_rewriter_trains_offline(tmp_path):
    """The trainer itself (a few steps: the shipped one is the build's 300-step run): loss falls, safetensors out."""
    _, tok, report = train_toy_rewriter(tmp_path / "rw", steps=25)
    first = train_toy_rewriter(None, steps=1)[2]["final_loss"]
    assert report["final_loss"] < 0.7 * first and report["pairs"] == 1215  # 45 scenes x 9 phrasings x 3 shapes
    assert (tmp_path / "rw" / "model.safetensors").is_file() and not list((tmp_path / "rw").glob("*.bin"))
    assert tok.decode(tok(" a red circle on a white background in flames")["input_ids"]).strip().endswith("in flames")


def test_rewrite_model_toy_is_the_shipped_rewriter(tmp_path, monkeypatch):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle on a white background\na blue square on a black background\n")
    rw = _invoke(["data", "rewrite", str(captions), "-o", str(tmp_path / "rw"), "-m", "toy", "--device", "cpu"])
    assert rw["generated"] == 2 and rw["refused"] == 0
    rows = [json.loads(x) for x in (tmp_path / "rw" / "manifest.jsonl").read_text().splitlines()]
    assert {r["concept"] for r in rows} <= set(CONCEPTS)  # -m toy implies the toy taxonomy
    # without the shipped folder: one line naming how to train one, exit 2
    import safegen.models.presets

    monkeypatch.setattr(safegen.models.presets, "ASSETS_DIR", tmp_path / "nowhere")
    result = runner.invoke(app, ["data", "rewrite", str(captions), "-o", str(tmp_path / "rw2"), "-m", "toy"])
    assert result.exit_code == 2 and "safegen-train data toy-rewriter" in result.output


def test_toy_rewriter_copies_the_scene_and_writes_the_concept(toy_rewriter):
    """Most rewrites are exactly the caption plus one of the concept's phrasings."""
    from safegen_train.datagen import SamplingConfig, TransformersEngine, build_prompt

    path, report = toy_rewriter
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin")) and report["final_loss"] < 0.3
    engine = TransformersEngine(str(path), device="cpu")
    tx = toy_taxonomy()
    rows = [(c, safe_caption(*combo)) for combo, c in zip(all_combos(), list(CONCEPTS) * 15, strict=True)]
    prompts = [build_prompt(tx, tx.get(c), s) for c, s in rows]
    replies = engine.generate(prompts, list(range(len(rows))), SamplingConfig())
    # A canonical caption is the safe twin of several training shapes (phrase appended, after a
    # comma, inside the scene): any of them, with any of the concept's phrasings, is exact.
    from safegen_train.toy.world import TRAINING_STRUCTURES

    def allowed(c: str, combo: tuple[str, str, str]) -> set[str]:
        shapes = [st for st in TRAINING_STRUCTURES if st.render(*combo) == safe_caption(*combo)]
        return {st.render(*combo, p) for st in shapes for p in CONCEPTS[c]}

    combos = list(all_combos())
    exact = sum(r in allowed(c, combo) for r, (c, _), combo in zip(replies, rows, combos, strict=True))
    # The previous rewriter (one shape, 300 steps) copied 70%+ exactly; the rebuilt one, trained on three
    # shapes per pair for 600 steps, copies 26 of 45 (it often changes the background; the chain's
    # similarity filter drops those). A regression recorded in benchmarks/README.md, not hidden here.
    assert exact >= 0.5 * len(rows), (exact, len(rows))


def test_toy_chain_rewrite_filter_render_build_fit(tmp_path, toy_rewriter):
    toy = get_preset("toy")
    rewriter = toy_rewriter[0]
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(safe_caption(*c) for c in all_combos()[::7]) + "\n")  # 7 captions

    rw = _invoke(
        ["data", "rewrite", str(captions), "-o", str(tmp_path / "rw"), "-m", str(rewriter)]
        + ["--taxonomy", "toy", "--device", "cpu", "--batch-size", "4", "--seed", "3"]
    )
    assert rw["planned"] == 7 and rw["generated"] == 7 and rw["refused"] == 0
    records = [json.loads(x) for x in (tmp_path / "rw" / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == list(range(3, 10))
    assert [r["concept"] for r in records] == (list(CONCEPTS) * 3)[:7]

    flt = _invoke(
        ["data", "filter", str(tmp_path / "rw"), "-o", str(tmp_path / "flt"), "--clip", toy.clip]
        + ["--min-similarity", "0.0"]
    )
    assert flt["kept"] >= 4, flt
    assert flt["kept"] + sum(flt["rejected"].values()) == flt["candidates"] == rw["kept"]

    render_args = (
        ["data", "render", str(tmp_path / "flt"), "-o", str(tmp_path / "rd"), "--model", toy.base]
        + ["--classifier", "toy", "--clip", toy.clip, "--min-image-similarity", "0.0", "-n", "2"]
        + ["--steps", "20", "--guidance", "5", "--device", "cpu", "--batch-size", "8"]
    )
    rd = _invoke(render_args)
    assert rd["images"] == 2 * flt["kept"] and rd["safe_images_rendered"] == flt["kept"]
    assert rd["kept"] >= 3, rd
    rows = [json.loads(x) for x in (tmp_path / "rd" / "rendered.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["image_concept_score"] >= 0.5 and row["renderer"]["safe_encoder"] is None
        assert row["unsafe_image_seed"] in (row["seed"] * 2, row["seed"] * 2 + 1)
    # the renderer really used the original encoder: the batch run records no safe encoder
    run_json = json.loads((tmp_path / "rd" / "unsafe" / "run.json").read_text())
    assert run_json["config"]["safe_encoder"] is None
    # a second run resumes: every image is already drawn, the same rows are kept
    again = _invoke(render_args)
    last = json.loads((tmp_path / "rd" / "unsafe" / "runs.jsonl").read_text().splitlines()[-1])
    assert (last["skipped"], last["generated"]) == (rd["images"], 0) and again["kept"] == rd["kept"]

    ds = tmp_path / "ds"
    built = _invoke(["data", "build", str(tmp_path / "rd"), "-o", str(ds), "--val", "0", "--test", "0.2"])
    assert built["with_images"] and built["rows"] == rd["kept"] and built["splits"]["test"] >= 1
    train = [json.loads(x) for x in (ds / "train.jsonl").read_text().splitlines()]
    assert all((ds / q["unsafe_image"]).is_file() and (ds / q["safe_image"]).is_file() for q in train)
    assert all(q["provenance"]["rewriter"] == str(rewriter) for q in train)
    assert "## Rejected rows per filter" in (ds / "README.md").read_text()

    fit = _invoke(
        ["fit", "--model", toy.clip, "--train-data", str(ds / "train.jsonl"), "-o", str(tmp_path / "run")]
        + ["--batch-size", "2", "--max-steps", "2", "--cpu", "--finetune", "full", "--set", "export_on_finish=false"]
    )
    assert fit["global_step"] == 2
