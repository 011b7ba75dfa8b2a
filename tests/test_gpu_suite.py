"""benchmarks/gpu_suite.py: real-size configs match the releases, sections fail alone, and the
tiny CPU run goes end to end (slow: about two minutes on this machine)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_suite  # noqa: E402


def test_real_size_configs_have_the_released_parameter_counts():
    # Built on the meta device: no memory, no compute. A wrong width, depth or block type in
    # any config changes its count, so the GPU run times the architecture users run.
    assert gpu_suite.real_size_params() == gpu_suite.PUBLISHED_PARAMS


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    calls = []

    def broken(ctx):
        calls.append("sd15")
        raise RuntimeError("CUDA out of memory (simulated)")

    def fine(ctx):
        calls.append("sdxl")
        return {"value": 1.5, "goal": "x <= 1.01", "goal_met": True}, "sdxl table"

    monkeypatch.setitem(gpu_suite.RUNNERS, "sd15", broken)
    monkeypatch.setitem(gpu_suite.RUNNERS, "sdxl", fine)
    out = tmp_path / "nested" / "suite.json"
    rc = gpu_suite.main(["--tiny", "--device", "cpu", "--only", "sdxl,sd15", "--json-out", str(out)])
    assert rc == 1
    assert calls == ["sd15", "sdxl"]  # suite order, whatever --only's order
    doc = json.loads(out.read_text())
    assert list(doc["sections"]) == ["sd15", "sdxl"]
    sd15, sdxl = doc["sections"]["sd15"], doc["sections"]["sdxl"]
    assert sd15["ok"] is False and sd15["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert "Traceback" in sd15["traceback"]
    assert sdxl["ok"] is True and sdxl["value"] == 1.5
    assert sdxl["goal_met"] is None  # a tiny CPU run says nothing about the goals
    assert doc["tiny"] is True and doc["device"] == "cpu"
    printed = capsys.readouterr().out
    assert "sdxl table" in printed and "FAILED (RuntimeError: CUDA out of memory" in printed


def test_whitebox_section_times_the_attack_step_at_tiny_size(tmp_path):
    # The same code as the GPU run (the attack's own run() through a Safe-CLIP-shaped encoder), tiny configs.
    out = tmp_path / "suite.json"
    assert gpu_suite.main(["--tiny", "--device", "cpu", "--only", "whitebox", "--json-out", str(out)]) == 0
    section = json.loads(out.read_text())["sections"]["whitebox"]
    assert section["ok"] is True, section.get("error")
    values = section["result"]["values"]
    assert set(values) == {"sampling step", "attack step"}
    assert all(len(v) == gpu_suite.TINY.rounds and min(v) > 0 for v in values.values())
    projection = section["projection"]
    assert projection["table"] == {"prompts": 142, "methods": 4, "attacks": 2}
    assert projection["budget_queries"] == 8 and projection["steps_per_query"] == 10
    assert projection["table_hours_upper_bound"] > 0


def test_unknown_section_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_suite.parse_args(["--only", "sd15,sd3"])
    assert exc.value.code == 2
    assert "unknown section(s) sd3" in capsys.readouterr().err


def _numbers(value):
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


@pytest.mark.slow
def test_tiny_cpu_run_end_to_end(tmp_path):
    out = tmp_path / "suite.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--tiny", "--device", "cpu", "--threads", "1"]
        + ["--json-out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["tiny"] is True and doc["plan"] == json.loads(json.dumps(gpu_suite.TINY.__dict__))
    assert list(doc["sections"]) == list(gpu_suite.SECTIONS)
    for name, section in doc["sections"].items():
        assert section["ok"] is True, (name, section.get("error"))
        values = list(_numbers(section))
        assert values and all(math.isfinite(v) for v in values), name
    rounds = gpu_suite.TINY.rounds
    sd15 = doc["sections"]["sd15"]["result"]
    assert set(sd15["values"]) == {"diffusers", "safegen", "sld-medium"}
    assert all(len(v) == rounds and min(v) > 0 for v in sd15["values"].values())
    batch = doc["sections"]["batch"]["variants"]
    assert set(batch) == {"sdpa", "channels_last"}
    sizes = [str(b) for b in gpu_suite.TINY.batch_sizes]
    assert list(batch["sdpa"]["per_batch_size"]) == sizes
    assert list(batch["channels_last"]["per_batch_size"]) == sizes[-1:]
    for per in batch["sdpa"]["per_batch_size"].values():
        assert per["runner_vs_bound"]["ratio"] > 0 and per["unet_only_images_per_s_median"] > 0
    train = doc["sections"]["train"]
    assert set(train["result"]["values"]) == {"lora-cached", "lora-uncached", "full-cached", "full-uncached"}
    assert train["trainable_params"]["lora-cached"] < train["trainable_params"]["full-cached"]
    assert all(m > 0 for m in train["epoch_minutes_projected"].values())
    llava = doc["sections"]["llava"]["result"]["values"]
    assert set(llava) == {"one at a time", f"batch {gpu_suite.TINY.llava_batch}"}
    assert "== summary" in proc.stdout
