"""The batch runner through its Python API, on the tiny pipeline (2 steps, 32x32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import FlagAll
from PIL import Image

from safegen.core.errors import SafegenError, UsageError
from safegen.core.io import read_png_parameters
from safegen.jobs import BatchConfig, BatchRunner, read_manifest, repair_manifest, run_batch, summarize
from safegen.jobs.config import BatchConfigError

FAST = dict(steps=2, width=32, height=32, device="cpu")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_batch_equals_single_and_plain_diffusers(tmp_path, tiny_safe_pipe):
    import torch

    rows = [
        {"prompt": p, "id": f"r{i}", "seed": 10 + i} for i, p in enumerate(["a cat", "a dog", "a red car", "a cat"])
    ]
    src = _jsonl(tmp_path / "p.jsonl", rows)
    batched = run_batch(BatchConfig(prompts=src, out=tmp_path / "b4", batch_size=4, **FAST), pipe=tiny_safe_pipe)
    single = run_batch(BatchConfig(prompts=src, out=tmp_path / "b1", batch_size=1, **FAST), pipe=tiny_safe_pipe)
    assert batched.generated == single.generated == 4
    assert batched.encoded_prompts == 3  # "a cat" twice, encoded once
    for i in range(4):
        name = f"images/r{i}_s{10 + i}.png"
        a, b = _pixels(tmp_path / "b4" / name), _pixels(tmp_path / "b1" / name)
        # Same noise and same embeddings; only float rounding of batched kernels may differ.
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01
    # Batch of one == a plain diffusers call with the same seed, bit for bit.
    plain = tiny_safe_pipe(
        "a dog", num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(11)
    ).images[0]
    assert np.array_equal(np.asarray(plain, dtype=np.int16), _pixels(tmp_path / "b1" / "images/r1_s11.png"))


def test_outputs_manifest_run_json_and_png_parameters(tmp_path, tiny_safe_pipe):
    src = _jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "a cat", "id": "cat", "seed": 5, "n": 2, "negative_prompt": "blurry"}, {"prompt": "a dog"}],
    )
    result = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", batch_size=8, **FAST), pipe=tiny_safe_pipe)
    assert (result.planned, result.generated, result.skipped, result.remaining) == (3, 3, 0, 0)
    records = {(r["id"], r["seed"]): r for r in read_manifest(tmp_path / "o")}
    assert set(records) == {("cat", 5), ("cat", 6), ("2", 0)}
    rec = records[("cat", 6)]
    assert rec["file"] == "images/cat_s6.png" and rec["index"] == 1 and rec["negative_prompt"] == "blurry"
    assert (rec["steps"], rec["guidance"], rec["width"], rec["height"]) == (2, 7.5, 32, 32)
    assert rec["decision"] == "pass" and rec["safety"] is None and "base" in rec and rec["safe_encoder"] is None
    import hashlib

    data = (tmp_path / "o" / rec["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    params = read_png_parameters(tmp_path / "o" / rec["file"])
    assert params["prompt"] == "a cat" and params["seed"] == 6 and params["size"] == "32x32"
    with Image.open(tmp_path / "o" / rec["file"]) as im:
        assert "Seed: 6" in im.text["parameters"]
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["config"]["steps"] == 2 and run["planned_images"] == 3 and "torch" in run["versions"]
    assert summarize(tmp_path / "o")["done"] == 3


def test_resume_skips_done_work_and_regenerates_or_refuses_changed_settings(tmp_path, tiny_safe_pipe):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"prompt {i}"} for i in range(5)])
    first = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", limit=2, batch_size=2, **FAST), pipe=tiny_safe_pipe)
    assert first.generated == 2
    again = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", batch_size=2, **FAST), pipe=tiny_safe_pipe)
    assert (again.skipped, again.generated) == (2, 3)
    # A deleted image is made again; the manifest keeps one record per image.
    (tmp_path / "o/images/1_s0.png").unlink()
    third = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", batch_size=2, **FAST), pipe=tiny_safe_pipe)
    assert (third.skipped, third.generated) == (4, 1)
    assert len(read_manifest(tmp_path / "o")) == 5
    before = (tmp_path / "o/manifest.jsonl").read_bytes()
    with pytest.raises(SafegenError, match=r"5 row\(s\) changed since the last run .*\(steps; first: .*p.jsonl:1"):
        run_batch(
            BatchConfig(prompts=src, out=tmp_path / "o", on_change="refuse", **{**FAST, "steps": 3}),
            pipe=tiny_safe_pipe,
        )
    assert (tmp_path / "o/manifest.jsonl").read_bytes() == before  # refused before any write
    fourth = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", **{**FAST, "steps": 3}), pipe=tiny_safe_pipe)
    assert (fourth.skipped, fourth.changed, fourth.changed_rows, fourth.generated) == (0, 5, 5, 5)
    assert {r["steps"] for r in read_manifest(tmp_path / "o")} == {3}


def test_refusing_shards_decide_on_the_whole_plan(tmp_path, tiny_safe_pipe):
    """With --on-change refuse, a shard whose own rows are unchanged refuses too: no shard waits for a stopped one."""
    rows = [{"prompt": f"prompt {i}"} for i in range(4)]
    src = _jsonl(tmp_path / "p.jsonl", rows)
    run_batch(BatchConfig(prompts=src, out=tmp_path / "o", **FAST), pipe=tiny_safe_pipe)
    rows[3]["prompt"] = "an edited prompt"  # row 3 belongs to one shard only
    src = _jsonl(tmp_path / "p.jsonl", rows)
    for index in (0, 1):
        with pytest.raises(SafegenError, match=r"1 row\(s\) changed since the last run"):
            cfg = BatchConfig(prompts=src, out=tmp_path / "o", on_change="refuse", num_shards=2, shard_index=index)
            run_batch(BatchConfig(**{**cfg.to_dict(), **FAST}), pipe=tiny_safe_pipe)


def test_random_seed_is_recorded_and_reused_on_resume(tmp_path, tiny_safe_pipe):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    run_batch(BatchConfig(prompts=src, out=tmp_path / "o", seed=-1, limit=1, **FAST), pipe=tiny_safe_pipe)
    seed = json.loads((tmp_path / "o/run.json").read_text())["config"]["seed"]
    assert seed >= 0
    run_batch(BatchConfig(prompts=src, out=tmp_path / "o", seed=-1, **FAST), pipe=tiny_safe_pipe)
    assert {r["seed"] for r in read_manifest(tmp_path / "o")} == {seed}


def test_torn_manifest_line_is_ignored_and_repaired(tmp_path, tiny_safe_pipe):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(3)])
    run_batch(BatchConfig(prompts=src, out=tmp_path / "o", limit=2, **FAST), pipe=tiny_safe_pipe)
    manifest = tmp_path / "o/manifest.jsonl"
    with open(manifest, "ab") as fh:
        fh.write(b'{"id": "3", "seed": 0, "file": "ima')  # a kill in the middle of a write
    assert len(read_manifest(tmp_path / "o")) == 2
    result = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", **FAST), pipe=tiny_safe_pipe)
    assert (result.skipped, result.generated) == (2, 1)
    lines = manifest.read_bytes().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["id"] for x in lines)
    assert repair_manifest(manifest) == 0


def test_hostile_ids_stay_inside_the_output_folder(tmp_path, tiny_safe_pipe):
    ids = ["../../escape", "/etc/passwd", "..", "a/b", "a_b", "C:\\x", "name with spaces"]
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "id": i} for i in ids])
    out = tmp_path / "deep" / "out"
    result = run_batch(BatchConfig(prompts=src, out=out, batch_size=8, **FAST), pipe=tiny_safe_pipe)
    assert result.generated == len(ids)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".png")
    assert len(files) == len(ids) and all(out / "images" in f.parents for f in files)
    assert {r["id"] for r in read_manifest(out)} == set(ids)


@pytest.mark.parametrize("policy", ["keep", "blur", "black", "drop"])
def test_safety_policy_records_decision_and_scores(tmp_path, tiny_safe_pipe, policy):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "id": "a", "seed": 1}, {"prompt": "y", "id": "b", "seed": 2}])
    cfg = BatchConfig(prompts=src, out=tmp_path / "o", check="flag-all", on_unsafe=policy, keep_flagged=True, **FAST)
    result = BatchRunner(cfg, pipe=tiny_safe_pipe, classifier=FlagAll()).run()
    assert result.flagged == 2 and result.dropped == (2 if policy == "drop" else 0)
    ref = run_batch(BatchConfig(prompts=src, out=tmp_path / "ref", **FAST), pipe=tiny_safe_pipe)
    assert ref.generated == 2
    for rec in read_manifest(tmp_path / "o"):
        assert rec["decision"] == policy and rec["safety"]["score"] == 0.9 and rec["safety"]["unsafe"] is True
        assert rec["safety"]["classifier"] == "flag-all" and rec["safety"]["labels"] == {"TEST": 0.9}
        original = _pixels(tmp_path / "ref" / f"images/{rec['id']}_s{rec['seed']}.png")
        if policy == "drop":
            assert rec["file"] is None and not (tmp_path / "o/images").exists()
        else:
            written = _pixels(tmp_path / "o" / rec["file"])
            assert np.array_equal(written, original) == (policy == "keep")
            if policy == "black":
                assert written.max() == 0
        if policy == "keep":
            assert "flagged_file" not in rec  # the original is the output already
        else:
            assert np.array_equal(_pixels(tmp_path / "o" / rec["flagged_file"]), original)
    # A resumed run does not redo dropped images.
    assert BatchRunner(cfg, pipe=tiny_safe_pipe, classifier=FlagAll()).run().skipped == 2


def test_safe_images_pass_and_flagged_originals_only_on_request(tmp_path, tiny_safe_pipe):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    cfg = BatchConfig(prompts=src, out=tmp_path / "o", check="t", on_unsafe="black", **FAST)
    BatchRunner(cfg, pipe=tiny_safe_pipe, classifier=FlagAll(unsafe=False)).run()
    (rec,) = read_manifest(tmp_path / "o")
    assert rec["decision"] == "pass" and rec["safety"]["score"] == 0.1
    cfg2 = BatchConfig(prompts=src, out=tmp_path / "o2", check="t", on_unsafe="blur", **FAST)
    BatchRunner(cfg2, pipe=tiny_safe_pipe, classifier=FlagAll()).run()
    assert not (tmp_path / "o2/flagged").exists()


def test_config_validation_names_the_field():
    with pytest.raises(SafegenError, match="on_unsafe 'blur' needs a classifier"):
        BatchConfig(prompts="p.txt", out="o", on_unsafe="blur")
    with pytest.raises(SafegenError, match="shard_index must be in"):
        BatchConfig(prompts="p.txt", out="o", num_shards=2, shard_index=2)


@pytest.mark.parametrize(
    ("fields", "name", "reason"),
    [
        ({"on_unsafe": "nope", "check": "x"}, "on_unsafe", "must be one of keep, blur, black, drop, got 'nope'"),
        ({"on_unsafe": "blur"}, "on_unsafe", "'blur' needs a classifier to know what is unsafe: set check"),
        ({"keep_flagged": True}, "keep_flagged", "needs a classifier to know what is unsafe: set check"),
        ({"num_shards": 0}, "num_shards", "must be >= 1, got 0"),
        ({"num_shards": 2, "shard_index": 2}, "shard_index", "must be in [0, 2) (one of the 2 shards"),
        ({"shard_index": -1}, "shard_index", "must be in [0, 1)"),
        ({"on_change": "maybe"}, "on_change", "must be one of regenerate, refuse, got 'maybe'"),
        ({"seed": -2}, "seed", "must be -1 (random) or in [0, 2**63), got -2"),
        ({"seed": 2**63}, "seed", "must be -1 (random) or in [0, 2**63)"),
        ({"guidance": float("nan")}, "guidance", "must be a finite number >= 0, got nan"),
        ({"guidance": -1.0}, "guidance", "must be a finite number >= 0, got -1.0"),
        ({"steps": 0}, "steps", "must be between 1 and 10000, got 0"),
        ({"n": 10_001}, "n", "must be between 1 and 10000, got 10001"),
        ({"device": "tpu"}, "device", "'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ({"attention": "flash"}, "attention", "'flash' is unknown; choose auto, sdpa, xformers, eager"),
        ({"threshold": 1.5}, "threshold", "must be a finite number in [0, 1], got 1.5"),
        ({"threshold": float("inf")}, "threshold", "must be a finite number in [0, 1], got inf"),
        ({"width": 30}, "width", "must be a positive multiple of 8, got 30"),
        ({"height": 0}, "height", "must be a positive multiple of 8, got 0"),
        ({"batch_size": 0}, "batch_size", "must be >= 1, got 0"),
        ({"limit": 0}, "limit", "must be >= 1, got 0"),
    ],
)
def test_config_raises_for_each_bad_field_with_its_name_and_reason(fields, name, reason):
    with pytest.raises(BatchConfigError) as info:
        BatchConfig(prompts="p.txt", out="o", **fields)
    assert isinstance(info.value, UsageError)  # the CLI exits 2
    assert info.value.field == name and info.value.reason.startswith(reason)
    assert str(info.value) == f"batch config: {name} {info.value.reason}"


def test_the_dry_run_plan_is_the_configs(tmp_path):
    from safegen.jobs.plan import preview_run

    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "n": 3}, {"prompt": "b"}, {"prompt": "c"}])
    assert preview_run(BatchConfig(prompts=src, out=tmp_path / "o", n=2)).images == 7
    plan = preview_run(BatchConfig(prompts=src, out=tmp_path / "o", n=2, limit=2, seed=-1, width=64, height=32))
    assert (plan.rows, plan.bad_rows, plan.images) == (2, 0, 5)
    assert not (tmp_path / "o").exists()  # planning writes nothing


def test_a_good_config_passes_and_round_trips():
    cfg = BatchConfig(prompts="p.txt", out="o", check="x", on_unsafe="drop", keep_flagged=True, seed=-1, **FAST)
    assert BatchConfig(**cfg.to_dict()) == cfg  # run.json's config builds the same config again


def test_scheduler_shards_cover_every_row_once_and_merge(tmp_path, tiny_safe_pipe):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "n": 1 + i % 2} for i in range(7)])
    results = [
        run_batch(
            BatchConfig(prompts=src, out=tmp_path / "o", num_shards=3, shard_index=k, **FAST), pipe=tiny_safe_pipe
        )
        for k in range(3)
    ]
    assert sum(r.generated for r in results) == 10 and not any(r.merged for r in results)
    assert len(list((tmp_path / "o").glob("manifest.shard-*.jsonl"))) == 3
    assert summarize(tmp_path / "o")["done"] == 10
    # An unsharded re-run merges the parts and finds nothing left to do.
    final = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", **FAST), pipe=tiny_safe_pipe)
    assert (final.skipped, final.generated) == (10, 0)
    assert not list((tmp_path / "o").glob("manifest.shard-*.jsonl"))
    assert not list((tmp_path / "o").glob("errors.shard-*.log"))  # shard error logs merged too
    log = (tmp_path / "o/errors.log").read_text()
    assert all(f"# merged from errors.shard-{k:05d}-of-00003.log" in log for k in range(3))
    lines = (tmp_path / "o/manifest.jsonl").read_text().splitlines()
    keys = [(json.loads(x)["id"], json.loads(x)["seed"]) for x in lines]
    assert len(keys) == 10 == len(set(keys))


def test_failed_batch_is_logged_and_the_rest_runs(tmp_path, tiny_safe_pipe):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "ok", "id": "a"}, {"prompt": "too big", "id": "b", "steps": 3}])

    class Boom:
        """Wraps the pipe; the 3-step batch fails."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, **kwargs):
            if kwargs["num_inference_steps"] == 3:
                raise RuntimeError("out of memory (simulated)")
            return self.inner(**kwargs)

    result = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", **FAST), pipe=Boom(tiny_safe_pipe))
    assert (result.generated, result.failed) == (1, 1)
    log = (tmp_path / "o/errors.log").read_text()
    assert "p.jsonl:2: id 'b' seed 0: generation failed: out of memory (simulated)" in log
