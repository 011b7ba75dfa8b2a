"""`safegen batch`: exit codes and output in-process, and real processes for kill, Ctrl-C and torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from safegen.cli.batch import batch
from safegen.jobs import read_manifest, txt_row_id
from safegen.safety import OutputClassifier, SafetyResult, register_classifier

VENV_BIN = Path(sys.executable).parent
FAST = ["--steps", "2", "--size", "32x32", "--device", "cpu"]


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(batch)
    return app


def _invoke(*args: str):
    return CliRunner().invoke(_app(), [str(a) for a in args])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, one_thread):
    from safegen import SafeStableDiffusionPipeline
    from safegen.testing import tiny_sd_pipeline

    path = tmp_path_factory.mktemp("tiny-sd")
    tiny_sd_pipeline(cls=SafeStableDiffusionPipeline).save_pretrained(path)
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    return env


def _prompts(path: Path, count: int) -> Path:
    path.write_text("".join(f"prompt number {i}\n" for i in range(count)), encoding="utf-8")
    return path


def _manifest_lines(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _start(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "safegen.cli.batch", *map(str, args)]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_images(proc: subprocess.Popen, out: Path, at_least: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be interrupted: {proc.stderr.read()}")
        if len(_manifest_lines(out)) >= at_least:
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no images appeared in time")


# ------------------------------------------------------------------- in-process
def test_run_json_output_summary_and_resume(tmp_path, model_dir):
    src = tmp_path / "p.csv"
    src.write_text("prompt,evaluation_seed,case_number,colour\na cat,1,c1,red\n,2,c2,red\na dog,3,c3,blue\n")
    out = tmp_path / "out"
    res = _invoke(src, "--model", model_dir, "--out", out, "--json", *FAST)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["generated"], data["bad_rows"], data["remaining"]) == (2, 1, 0)
    assert "p.csv:3: empty prompt" in res.stderr and "unknown column(s) 'colour'" in res.stderr
    assert "p.csv:3: empty prompt" in (out / "errors.log").read_text()
    assert sorted(p.name for p in (out / "images").iterdir()) == ["c1_s1.png", "c3_s3.png"]
    again = _invoke(src, "--model", model_dir, "--out", out, *FAST)
    assert again.exit_code == 0 and "done 0, reused 2" in again.stdout
    summary = _invoke("--summary", out, "--json")
    assert summary.exit_code == 0
    counts = json.loads(summary.stdout)
    assert (counts["done"], counts["planned"], counts["bad_rows"], counts["flagged"]) == (2, 2, 1, 0)
    assert counts["images_per_s"] > 0
    text = _invoke("--summary", out)
    assert "2/2 images done" in text.stdout  # the counts are the result: stdout


def test_merge_folds_shard_manifests_and_error_logs(tmp_path, model_dir):
    src = tmp_path / "p.txt"
    src.write_text("a cat\na dog\na bird\n")
    out = tmp_path / "out"
    for k in range(2):
        res = _invoke(src, "--model", model_dir, "--out", out, "--num-shards", "2", "--shard-index", str(k), *FAST)
        assert res.exit_code == 0, res.output
        assert f"safegen batch --merge {out}" in res.stderr  # a scheduler shard cannot merge by itself
    assert len(list(out.glob("errors.shard-*.log"))) == 2
    res = _invoke("--merge", out)
    assert res.exit_code == 0 and "3/3 images done" in res.stdout
    assert not list(out.glob("errors.shard-*.log")) and not list(out.glob("manifest.shard-*.jsonl"))
    assert (out / "errors.log").read_text().count("# merged from errors.shard-") == 2


def test_check_and_policy_by_classifier_name(tmp_path, model_dir):
    class Everything(OutputClassifier):
        name = "test-everything"

        def classify(self, images):
            return [SafetyResult(unsafe=True, score=0.75) for _ in images]

    register_classifier("test-everything", Everything)
    src = _prompts(tmp_path / "p.txt", 2)
    out = tmp_path / "out"
    args = ["--model", model_dir, "--out", out, "--check", "test-everything", "--on-unsafe", "black", "--json"]
    res = _invoke(src, *args, *FAST)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["flagged"] == 2
    assert {r["decision"] for r in read_manifest(out)} == {"black"}
    run = json.loads((out / "run.json").read_text())
    assert run["classifier"] == {"name": "test-everything", "threshold": 0.5}


def test_usage_errors_exit_2_and_file_errors_exit_1(tmp_path, model_dir):
    src = _prompts(tmp_path / "p.txt", 1)
    assert _invoke(src, "--on-unsafe", "blur").exit_code == 2  # needs --check
    assert _invoke(src, "--on-unsafe", "nope", "--check", "x").exit_code == 2
    assert _invoke(src, "--num-shards", "2", "--shard-index", "2").exit_code == 2
    assert _invoke(src, "--size", "30x30").exit_code == 2
    assert _invoke().exit_code == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    res = _invoke(bad, "--model", model_dir, "--out", tmp_path / "o", "--strict", *FAST)
    assert res.exit_code == 1
    assert "bad.jsonl:2: prompt must be text, got int (--strict stops at the first bad row)" in res.stderr
    assert not (tmp_path / "o" / "images").exists()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    res = _invoke(empty, "--dry-run")
    assert res.exit_code == 1 and "empty.csv: the file is empty" in res.stderr
    assert _invoke("--summary", tmp_path).exit_code == 1


def test_dry_run_plans_without_a_model(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text('{"prompt": "a", "n": 3}\n{"prompt": "b"}\nnot json\n')
    res = _invoke(src, "--dry-run", "--json", "-n", "2")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["rows"], data["bad_rows"], data["images"]) == (2, 1, 5)
    res = _invoke(src, "--dry-run", "--json", "-n", "2", "--limit", "1", "--seed", "-1", "--size", "64x32")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["images"] == 3  # the plan is the config's: --limit 1 keeps row "a" (n 3)
    res = _invoke(src, "--dry-run", "--strict")
    assert res.exit_code == 1 and "p.jsonl:3" in res.stderr  # --strict stops at the bad row, as a run does


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--on-unsafe", "blur"], "error: --on-unsafe 'blur' needs a classifier to know what is unsafe"),
        (["--keep-flagged"], "error: --keep-flagged needs a classifier to know what is unsafe"),
        (["--on-unsafe", "nope", "--check", "x"], "error: --on-unsafe must be one of keep, blur, black, drop"),
        (["--num-shards", "2", "--shard-index", "3"], "error: --shard-index must be in [0, 2)"),
        (["--on-change", "maybe"], "error: --on-change must be one of regenerate, refuse, got 'maybe'"),
        (["--seed", "-2"], "error: --seed must be -1 (random) or in [0, 2**63), got -2"),
        (["--guidance", "inf"], "error: --guidance must be a finite number >= 0, got inf"),
        (["--steps", "20000"], "error: --steps must be between 1 and 10000, got 20000"),
        (["-n", "20000"], "error: --num-images must be between 1 and 10000, got 20000"),
        (["--device", "tpu"], "error: --device 'tpu' is not a device"),
        (["--attention", "flash"], "error: --attention 'flash' is unknown"),
        (["--threshold", "2", "--check", "x"], "error: --threshold must be a finite number in [0, 1], got 2.0"),
        (["--size", "30x30"], "Invalid value for --size"),
        (["--activation", "relu"], "Invalid value for --activation"),
    ],
)
def test_a_dry_run_with_a_bad_option_fails_exactly_like_a_run(tmp_path, args, message):
    src = _prompts(tmp_path / "p.txt", 1)
    out = tmp_path / "o"
    run = _invoke(src, "--out", out, "--model", "nobody/none", *args)
    dry = _invoke(src, "--out", out, "--model", "nobody/none", *args, "--dry-run")
    assert run.exit_code == dry.exit_code == 2, (run.output, dry.output)
    assert message in dry.stderr and dry.stderr == run.stderr  # the flag is named, never the config field
    assert "batch config" not in dry.stderr and dry.stdout == "" and not out.exists()


# ------------------------------------------------------------------ processes
def test_sigkill_then_resume_does_every_row_exactly_once(tmp_path, model_dir):
    src = _prompts(tmp_path / "p.txt", 48)
    out = tmp_path / "out"
    args = [src, "--model", model_dir, "--out", out, "--batch-size", "2", *FAST]
    proc = _start(args)
    _wait_for_images(proc, out, at_least=4)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_at_kill = _manifest_lines(out)
    assert 4 <= len(done_at_kill) < 48
    # No half files: every finished-name PNG opens; only hidden temp files may be partial.
    from PIL import Image

    for png in (out / "images").glob("*.png"):
        with Image.open(png) as im:
            im.load()
    from safegen.jobs import BatchConfig, run_batch

    cfg = BatchConfig(
        prompts=src, out=out, model=str(model_dir), batch_size=2, steps=2, width=32, height=32, device="cpu"
    )
    result = run_batch(cfg)
    assert result.skipped >= len(done_at_kill) and result.skipped + result.generated == 48
    lines = (out / "manifest.jsonl").read_text().splitlines()
    keys = [json.loads(line)["id"] for line in lines]  # every line parses
    ids = [txt_row_id(f"prompt number {i}") for i in range(48)]  # a .txt row's id hashes its text
    assert sorted(keys) == sorted(ids)  # each row exactly once
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}_s0.png" for i in ids)


def test_sigint_finishes_the_batch_and_exits_130_with_a_resume_hint(tmp_path, model_dir):
    src = _prompts(tmp_path / "p.txt", 60)
    out = tmp_path / "out"
    proc = _start([src, "--model", model_dir, "--out", out, "--batch-size", "3", *FAST])
    _wait_for_images(proc, out, at_least=3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "SIGINT: finishing the current batch" in stderr
    assert "interrupted:" in stderr and "resume with:" in stderr
    assert f"batch {src} --model {model_dir} --out {out}" in stderr
    lines = _manifest_lines(out)
    assert len(lines) % 3 == 0 and 3 <= len(lines) < 60  # whole batches only
    assert len(lines) == len(list((out / "images").glob("*.png")))
    assert not list((out / "images").glob(".*.tmp"))


def test_torchrun_two_processes_split_the_rows_and_merge(tmp_path, model_dir):
    src = _prompts(tmp_path / "p.txt", 9)
    out = tmp_path / "out"
    cmd = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "safegen.cli.batch"]
    cmd += [str(src), "--model", str(model_dir), "--out", str(out), "--json", *FAST]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(chunk) for chunk in proc.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert sorted((r["shard_index"], r["num_shards"]) for r in results) == [(0, 2), (1, 2)]
    assert sorted(r["generated"] for r in results) == [4, 5]
    assert not list(out.glob("manifest.shard-*.jsonl"))  # merged by rank 0
    assert not list(out.glob("errors.shard-*.log")) and (out / "errors.log").is_file()
    assert all(r["merged"] for r in results) and "--merge" not in proc.stderr  # no rank asks for a merge
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(txt_row_id(f"prompt number {i}") for i in range(9))
    assert {r["shard"] for r in records} == {0, 1}
