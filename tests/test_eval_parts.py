"""Evaluation building blocks: statistics, methods, text classifier, reports, i2t and retrieval evals."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.core.errors import SafegenError, UsageError
from safegen.evaluation.i2t_eval import token_f1
from safegen.evaluation.methods import parse_method
from safegen.evaluation.report import compare_reports, contact_sheet, markdown_report, write_report
from safegen.evaluation.retrieval_eval import unsafe_top1_share
from safegen.evaluation.stats import bootstrap_interval, group_by, split_categories, summarize
from safegen.evaluation.t2i_eval import T2IEvalConfig
from safegen.evaluation.text_safety import WordListTextClassifier

runner = CliRunner()


def test_bootstrap_interval_covers_a_known_proportion():
    flags = [1] * 30 + [0] * 70
    lo, hi = bootstrap_interval(flags, seed=1)
    assert lo < 0.30 < hi
    assert 0.19 < lo < 0.25 and 0.35 < hi < 0.41  # binomial SE 0.046: about +-0.09
    assert bootstrap_interval(flags, seed=1) == (lo, hi)  # seeded: reproducible
    assert bootstrap_interval([1] * 10) == (1.0, 1.0)
    s = summarize(flags, [0.5] * 100)
    assert s["unsafe_rate"] == 0.3 and s["n_images"] == 100 and s["n_unsafe"] == 30 and s["mean_score"] == 0.5


def test_per_category_grouping_on_a_handmade_manifest():
    manifest = [
        {"categories": "violence, self-harm", "unsafe": True},
        {"categories": "violence", "unsafe": False},
        {"categories": "sexual", "unsafe": True},
        {"categories": "", "unsafe": False},
    ]
    groups = group_by(manifest, lambda r: split_categories(r["categories"]) or ["none"])
    rates = {c: summarize([r["unsafe"] for r in rs])["unsafe_rate"] for c, rs in groups.items()}
    assert rates == {"violence": 0.5, "self-harm": 1.0, "sexual": 1.0, "none": 0.0}


def test_method_names_parse_and_bad_ones_are_clear():
    assert parse_method("safe-clip+sld-medium") == {"safe_clip": True, "sld": "medium", "negative_prompt": False}
    assert parse_method("original") == {"safe_clip": False, "sld": None, "negative_prompt": False}
    with pytest.raises(SafegenError, match="unknown method part 'sld-ultra'"):
        parse_method("sld-ultra")
    with pytest.raises(SafegenError, match="two SLD levels"):
        parse_method("sld-weak+sld-max")


# A bad setting is refused when the config is built (by Python users as by `safegen eval t2i`), before any
# model loads: the config's message names the field, the command's the flag (width and height: --size).
T2I_BAD_FIELDS = [
    ("methods", [], "methods is empty: name at least one method"),
    ("steps", 0, "steps must be between 1 and 10000, got 0"),
    ("steps", 10_001, "steps must be between 1 and 10000"),
    ("guidance", -1.0, "guidance must be a finite number >= 0, got -1.0"),
    ("guidance", float("nan"), "guidance must be a finite number"),
    ("width", 100, "width must be a positive multiple of 8, got 100"),
    ("height", 0, "height must be a positive multiple of 8, got 0"),
    ("seed", 2**70, "seed must be -1 (random) or in [0, 2**63)"),
    ("batch_size", 0, "batch_size must be >= 1, got 0"),
    ("limit", 0, "limit must be >= 1, got 0"),
    ("quality_limit", 0, "quality_limit must be >= 1, got 0"),
    ("num_shards", 0, "num_shards must be >= 1, got 0"),
    ("shard_index", 1, "shard_index must be in [0, 1) (one of the 1 shards, counting from 0), got 1"),
    ("shard_index", -1, "shard_index must be in [0, 1)"),
    ("device", "gpu0", "device 'gpu0' is not a device"),
    ("judges", ["nudenet", "no-such-judge"], "judges has unknown judge(s) no-such-judge"),
    ("judges", ["nudenet", "nudenet"], "judges has judges named twice: nudenet, nudenet"),
    ("max_failed_share", 1.5, "max_failed_share must be a finite number in [0, 1], got 1.5"),
]


@pytest.mark.parametrize(("name", "value", "message"), T2I_BAD_FIELDS)
def test_t2i_eval_config_refuses_a_bad_field(name, value, message):
    from safegen.evaluation.t2i_eval import EvalConfigError

    with pytest.raises(EvalConfigError, match=re.escape("eval config: " + message)) as caught:
        T2IEvalConfig(prompts="p.txt", out="o", base="b", **{name: value})
    assert caught.value.field == name and isinstance(caught.value, UsageError)


def test_t2i_eval_config_takes_its_defaults_and_edge_values():
    T2IEvalConfig(prompts="p.txt", out="o", base="b")
    T2IEvalConfig(prompts="p.txt", out="o", base="b", width=64, height=32, seed=-1, guidance=0.0, max_failed_share=1.0)
    T2IEvalConfig(prompts="p.txt", out="o", base="b", num_shards=3, shard_index=2, judges=["nudenet", "toy"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-shards", "2", "--shard-index", "5"], "--shard-index must be in [0, 2) (one of the 2 shards"),
        (["--guidance", "-1"], "--guidance must be a finite number >= 0, got -1.0"),
        (["--seed", str(2**70)], "--seed must be -1 (random) or in [0, 2**63)"),
        (["--steps", "20000"], "--steps must be between 1 and 10000, got 20000"),
        (["--judges", "nudenet,nudenet-0.45"], "--judges has unknown judge(s) nudenet-0.45"),
        (["--judges", ","], "--judges is empty: name at least one judge"),
        (["--methods", ","], "--methods is empty: name at least one method"),
        (["--device", "gpu0"], "--device 'gpu0' is not a device"),
    ],
)
def test_eval_t2i_bad_settings_exit_2_before_any_model_loads(tmp_path, args, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    base = ["eval", "t2i", "--prompts", str(prompts), "--model", "nobody/none", "--out", str(tmp_path / "o")]
    res = runner.invoke(app, [*base, "--device", "cpu", *args])
    assert res.exit_code == 2 and f"error: {message}" in res.output, res.output
    assert "weights" not in res.output and not (tmp_path / "o").exists()


def test_wordlist_classifier_matches_whole_words_only():
    clf = WordListTextClassifier({"violence": ["blood", "gun"], "fire": ["on fire"]})
    v = clf.classify(["A red circle covered in BLOOD", "a bloodhound", "a house on fire", "a gunnysack"])
    assert [x.unsafe for x in v] == [True, False, True, False]
    assert v[0].concepts == ["violence"] and v[0].matches == ["blood"]


def test_token_f1():
    assert token_f1("a red circle", "a red circle") == 1.0
    assert token_f1("a red circle", "a blue square") == pytest.approx(1 / 3)
    assert token_f1("", "x") == 0.0


def test_unsafe_top1_share_by_hand():
    safe = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    unsafe = torch.tensor([[0.9, 0.1], [-1.0, 0.0]])
    queries = torch.tensor([[0.8, 0.2], [0.1, 0.9], [-1.0, 0.1]])
    # q0 nearest unsafe[0]; q1 nearest safe[1]; q2 nearest unsafe[1]
    assert unsafe_top1_share(queries, safe, unsafe) == pytest.approx(200 / 3)


def test_report_files_and_comparison(tmp_path):
    report = {
        "kind": "t2i",
        "methods": {
            "original": {
                "unsafe_rate": 0.5,
                "n_images": 4,
                "n_unsafe": 2,
                "ci95": [0.1, 0.9],
                "by_category": {"violence": {"unsafe_rate": 0.5}},
                "quality": {"clip_score": 30.0},
            },
            "safe-clip": {
                "unsafe_rate": 0.25,
                "n_images": 4,
                "n_unsafe": 1,
                "ci95": [0.0, 0.75],
                "by_category": {"violence": {"unsafe_rate": 0.25}},
                "quality": {"clip_score": 29.0},
            },
            "sld-max": {"unavailable": "removed", "unsafe_rate": None, "n_images": 0},
        },
    }
    paths = write_report(tmp_path, report)
    assert json.loads(paths["json"].read_text())["methods"]["safe-clip"]["unsafe_rate"] == 0.25
    md = markdown_report(report)
    assert "| safe-clip | 4 | - | 1 | 25.0%" in md and "unavailable: removed" in md
    assert (tmp_path / "unsafe_rate_by_category.png").is_file() and (tmp_path / "quality_vs_safety.png").is_file()
    rows = compare_reports(report, {"methods": {"safe-clip": {"unsafe_rate": 0.5, "quality": {"clip_score": 28.0}}}})
    assert rows == [
        {"method": "safe-clip", "unsafe_rate": 0.25, "previous": 0.5, "delta": -0.25, "clip_score_delta": 1.0}
    ]


def test_contact_sheet_blurs_flagged():
    checker = Image.new("RGB", (32, 32))
    checker.putdata([(255, 255, 255) if (x // 4 + y // 4) % 2 else (0, 0, 0) for y in range(32) for x in range(32)])
    sheet = contact_sheet([checker, checker], [False, True], columns=2, cell=32)
    left, right = sheet.crop((0, 0, 32, 32)), sheet.crop((32, 0, 64, 32))
    inner = (4, 4, 28, 28)  # skip the red frame
    spread = lambda im: max(im.crop(inner).convert("L").getdata()) - min(im.crop(inner).convert("L").getdata())  # noqa: E731
    assert spread(left) == 255 and spread(right) < 100


@pytest.fixture(scope="module")
def quads(tmp_path_factory):
    root = tmp_path_factory.mktemp("quads")
    lines = []
    for i, (c1, c2) in enumerate([("red", "darkred"), ("blue", "navy"), ("green", "black")]):
        Image.new("RGB", (32, 32), c1).save(root / f"s{i}.png")
        Image.new("RGB", (32, 32), c2).save(root / f"u{i}.png")
        lines.append(
            json.dumps(
                {
                    "safe_text": f"a {c1} square",
                    "unsafe_text": f"a {c1} square covered in blood",
                    "safe_image": f"s{i}.png",
                    "unsafe_image": f"u{i}.png",
                }
            )
        )
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    from safegen.testing import tiny_clip_model, tiny_clip_processor

    for name, seed in (("clip", 0), ("safe", 3)):
        tiny_clip_model(seed=seed).save_pretrained(root / name)
        tiny_clip_processor().save_pretrained(root / name)
    return root


def test_eval_retrieval_cli(quads, tmp_path):
    res = runner.invoke(
        app,
        [
            "eval",
            "retrieval",
            str(quads / "data.jsonl"),
            "--clip",
            str(quads / "clip"),
            "--safe",
            str(quads / "safe"),
            "--out",
            str(tmp_path),
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(report["tables"]) == {"original", "safe"}
    assert set(report["tables"]["original"]) == {"S-V", "S-G", "U-V", "U-G"}
    assert report["tables"]["original"]["S-V"]["t2i"]["20"] == 100.0  # 3 items: everything within top 20
    red = report["redirection"]["original"]
    assert 0.0 <= red["text_to_image_unsafe_top1"] <= 100.0 and "image_to_text_unsafe_top1" in red
    assert (tmp_path / "report.json").is_file()


def test_eval_retrieval_bad_data_names_line(quads, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"safe_text": "a"}\n')
    res = runner.invoke(
        app,
        [
            "eval",
            "retrieval",
            str(bad),
            "--clip",
            str(quads / "clip"),
            "--safe",
            str(quads / "safe"),
            "--device",
            "cpu",
        ],
    )
    # one reader with training: the file by its path, the line as name:line
    assert res.exit_code == 1 and str(bad) in res.output and "bad.jsonl:1" in res.output


def test_eval_i2t_cli_reports_both_methods(tmp_path):
    from safegen.testing import tiny_llava, tiny_safe_vision_encoder

    model, processor = tiny_llava(seed=0)
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    tiny_safe_vision_encoder(seed=1).save_pretrained(tmp_path / "safe")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, color in enumerate(("red", "green", "blue")):
        Image.new("RGB", (32, 32), color).save(imgs / f"{i}.png")
    (tmp_path / "labels.jsonl").write_text('{"image": "0.png", "categories": ["violence"]}\n')
    res_args = [
        "eval",
        "i2t",
        str(imgs),
        "--model",
        str(tmp_path / "llava"),
        "--safe-encoder",
        str(tmp_path / "safe"),
        "--labels",
        str(tmp_path / "labels.jsonl"),
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
        "--out",
        str(tmp_path / "out"),
        "--json",
        "--device",
        "cpu",
    ]
    res = runner.invoke(app, res_args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(report["methods"]) == {"original", "safe-clip"}
    for m in report["methods"].values():
        assert m["n_images"] == 3 and 0.0 <= m["unsafe_rate"] <= 1.0
        assert set(m["by_category"]) == {"violence", "safe"}
    assert report["methods"]["original"]["quality"]["caption_token_f1_vs_original"] == 1.0
    captions = [json.loads(x) for x in (tmp_path / "out" / "captions.jsonl").read_text().splitlines()]
    assert len(captions) == 6 and (tmp_path / "out" / "report.md").is_file()
    # --compare-to the report this run overwrites: the deltas are to the report as it was before the run.
    earlier = tmp_path / "out" / "report.json"
    previous = json.loads(earlier.read_text())
    previous["methods"]["original"]["unsafe_rate"] = report["methods"]["original"]["unsafe_rate"] + 0.25
    earlier.write_text(json.dumps(previous))
    again = runner.invoke(app, [*res_args, "--compare-to", str(earlier)])
    assert again.exit_code == 0, again.output
    assert "-25.0pt" in again.stdout and "+0.0pt" in again.stdout  # original changed, safe-clip did not
