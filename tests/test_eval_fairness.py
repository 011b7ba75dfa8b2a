"""`safegen eval t2i` compares like with like: same (prompt, seed) pairs for every method, long prompts cut once.

The regression: diffusers' deprecated SLD pipeline fails on any batch mixing a prompt longer
than the tokenizer's window with shorter ones; the batch was dropped for SLD only and the
report still claimed every method used the same prompts. tests/data/i2p_sample.csv holds four
real I2P rows (same guidance, so they share a batch) of which two exceed the toy tokenizer's
32 tokens and one holds emoji.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.evaluation.prompt_set import prepare_prompts, truncate_prompt
from safegen.evaluation.t2i_eval import common_images

I2P_SAMPLE = Path(__file__).parent / "data" / "i2p_sample.csv"
runner = CliRunner()


@pytest.fixture(scope="module")
def toy_sd():
    from safegen.models.presets import ASSETS_DIR

    return str(ASSETS_DIR / "toy" / "sd")


@pytest.fixture(scope="module")
def toy_tokenizer(toy_sd):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(toy_sd, subfolder="tokenizer")


def test_sld_fails_on_mixed_lengths_and_the_runner_recovers_row_by_row(tmp_path, toy_sd):
    """The diffusers bug itself, then the batch runner's row-by-row retry on the raw I2P rows."""
    import torch

    from safegen.evaluation.methods import build_method
    from safegen.jobs import BatchConfig, BatchRunner
    from safegen.pipelines.loading import load_t2i_pipeline

    torch.set_num_threads(1)
    base = load_t2i_pipeline(toy_sd, None, device="cpu")
    sld = build_method("sld-medium", base, safety_concept="blood, fire")
    rows = I2P_SAMPLE.read_text().count("\n") - 1
    prompts = [line.split('"')[1] for line in I2P_SAMPLE.read_text().splitlines()[1:]]
    assert len(prompts) == rows == 4
    with pytest.raises(ValueError, match="truncation"):
        sld.pipe(prompt=prompts, num_inference_steps=1, output_type="pil", **sld.call_kwargs)

    cfg = BatchConfig(prompts=I2P_SAMPLE, out=tmp_path / "run", steps=1, batch_size=4, device="cpu")
    result = BatchRunner(cfg, pipe=sld.pipe, call_kwargs=sld.call_kwargs).run()
    assert (result.generated, result.failed, result.failures) == (4, 0, [])


def test_truncation_keeps_exactly_the_tokens_the_encoder_reads(toy_tokenizer):
    limit = toy_tokenizer.model_max_length - 2
    assert truncate_prompt(toy_tokenizer, "a red circle") is None
    for line in I2P_SAMPLE.read_text().splitlines()[1:]:
        prompt = line.split('"')[1]
        ids = toy_tokenizer(prompt, add_special_tokens=False).input_ids
        cut = truncate_prompt(toy_tokenizer, prompt)
        if len(ids) <= limit:
            assert cut is None
            continue
        cut_ids = toy_tokenizer(cut, add_special_tokens=False).input_ids
        assert len(cut_ids) <= limit
        assert cut_ids == ids[: len(cut_ids)]  # a prefix of what the encoder would read
        assert len(cut_ids) >= limit - 3  # at most a word's pieces lost (byte-level fallback)


def test_prepared_file_is_stable_and_keeps_metadata(tmp_path, toy_tokenizer):
    out = tmp_path / "eval.jsonl"
    first = prepare_prompts(I2P_SAMPLE, out, toy_tokenizer)
    mtime = out.stat().st_mtime_ns
    again = prepare_prompts(I2P_SAMPLE, out, toy_tokenizer)
    assert out.stat().st_mtime_ns == mtime  # unchanged content is not rewritten
    assert first.truncated == again.truncated == ["3"]  # longer than the toy tokenizer's 40 tokens
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["3", "5", "6", "7"]
    assert rows[0]["truncated_from"].startswith("a detailed painting") and "truncated_from" not in rows[2]
    assert rows[2]["categories"] == "hate, self-harm" and rows[2]["seed"] > 0 and rows[2]["guidance"] == 7.0


def test_common_images_excludes_a_pair_any_method_lost():
    rec = {"prompt": "p"}
    done = {"a": {("1", 0): rec, ("2", 0): rec}, "b": {("1", 0): rec}}
    common, excluded, losses = common_images(done, {"b": {("2", 0): "generation failed: boom"}})
    assert common == {("1", 0)}
    assert excluded == [{"id": "2", "seed": 0, "prompt": "p", "failed": {"b": "generation failed: boom"}}]
    assert losses == {"a": {"n_failed": 0, "failed_share": 0.0}, "b": {"n_failed": 1, "failed_share": 0.5}}


def _toy_eval(out, *extra, methods="original,sld-medium"):
    args = ["eval", "t2i", "--prompts", str(I2P_SAMPLE), "--preset", "toy", "--methods", methods]
    args += ["--steps", "2", "--batch-size", "4", "--out", str(out), "--device", "cpu", "--json", *extra]
    return runner.invoke(app, args)


def test_toy_eval_on_i2p_rows_scores_every_method_on_the_same_pairs(tmp_path):
    out = tmp_path / "eval"
    res = _toy_eval(out)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["excluded"] == [] and report["failed_share_exceeded"] == []
    assert report["prompt_sets"]["prompts"]["truncated"] == 1
    manifests = {}
    for name, entry in report["methods"].items():
        assert (entry["n_images"], entry["n_failed"], entry["n_truncated"]) == (4, 0, 1)
        lines = (out / "runs" / name / "prompts" / "manifest.jsonl").read_text().splitlines()
        manifests[name] = sorted((r["id"], r["seed"], r["prompt"]) for r in map(json.loads, lines))
    assert manifests["original"] == manifests["sld-medium"]  # same cut prompts, same seeds
    assert "Long prompts (prompts): 1 of 4" in (out / "report.md").read_text()


def test_a_row_that_keeps_failing_is_excluded_everywhere_and_fails_the_command(tmp_path, monkeypatch):
    from safegen.jobs.runner import BatchRunner

    real = BatchRunner._generate

    def flaky(self, batch, cache):  # SLD cannot make row 6, alone or in a batch
        if self.record_extra.get("method") == "sld-medium" and any(j.id == "6" for j in batch):
            raise RuntimeError("out of memory")
        return real(self, batch, cache)

    monkeypatch.setattr(BatchRunner, "_generate", flaky)
    out = tmp_path / "eval"
    res = _toy_eval(out)
    assert res.exit_code == 1
    assert "sld-medium could not generate more than 1.0% of the images" in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert [(x["id"], x["failed"]) for x in report["excluded"]] == [
        ("6", {"sld-medium": "generation failed: out of memory"})
    ]
    m = report["methods"]
    assert (m["original"]["n_images"], m["sld-medium"]["n_images"]) == (3, 3)  # row 6 left out of both
    assert (m["original"]["n_failed"], m["sld-medium"]["n_failed"]) == (0, 1)
    assert m["sld-medium"]["failed_share"] == 0.25
    assert report["failed_share_exceeded"] == ["sld-medium"]
    assert "## Excluded images (1)" in (out / "report.md").read_text()
    # the other rows of the failed batch were retried one by one and kept
    sld_ids = {json.loads(x)["id"] for x in (out / "runs/sld-medium/prompts/manifest.jsonl").read_text().splitlines()}
    assert sld_ids == {"3", "5", "7"}

    # a looser limit accepts the same run (resumed: nothing regenerated but the failing row)
    res = _toy_eval(out, "--max-failed-share", "0.5")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["excluded"][0]["id"] == "6"
