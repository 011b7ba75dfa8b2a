"""Fault injection for ``safegen-train``: exit codes, one-line errors, run folders, locks,
export folders, config values, hostile data rows and damaged checkpoints.

Each test encodes a probe that once gave a wrong answer with exit 0 or destroyed data:
errors exiting 0, ``fit`` mixing two runs in one folder, ``export`` deleting a user's
folder, ``lr=inf`` exporting NaN weights, one bad .jsonl row killing the run, a damaged
newest checkpoint ending ``--resume latest``, and a resume that silently dropped the
``--set`` values the run was started with.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import base_config
from typer.testing import CliRunner

from safegen_train.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real console entry point (``main``), as a user runs it."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONPATH=str(REPO))
    full_env.pop("SAFEGEN_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", "from safegen_train.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=str(cwd or REPO),
        timeout=240,
    )


def _fit_args(train_world, out: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--model",
        str(train_world["clip"]),
        "--train-data",
        str(train_world["train"]),
        "-o",
        str(out),
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--cpu",
        "--set",
        "max_text_length=16",
        "--set",
        "save_every_steps=1",
        "--set",
        "export_on_finish=false",
        "--set",
        "log_every=1",
        *extra,
    ]


# ----------------------------------------------------------------------------- exit codes of the real entry point


def test_entry_point_exit_codes_and_one_line_errors(train_world, tmp_path):
    r = _cli()
    assert r.returncode == 2 and "Usage" in r.stdout + r.stderr  # no arguments: help, usage error
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model: m\nlearning_rate: 1\n")
    cases = [
        (["fit", "-c", str(bad_yaml), "--dry-run"], 2, "bad.yaml"),
        (["fit", "-c", str(unknown), "--dry-run"], 2, "unknown field 'learning_rate'"),
        (["fit", "--model", "m", "--train-data", "d.jsonl", "--lr", "-1", "--dry-run"], 2, "lr must be > 0"),
        (["fit", "--model", "m", "--train-data", "d.jsonl", "--lr", "inf", "--dry-run"], 2, "lr must be a finite"),
        (["fit", "--no-such-flag"], 2, "No such option"),
        (["export", str(tmp_path / "missing"), str(tmp_path / "x")], 2, "not a checkpoint folder"),
        (["fit", "-c", str(tmp_path / "missing.yaml")], 2, "missing.yaml' does not exist"),
    ]
    for args, code, text in cases:
        r = _cli(*args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert text in r.stderr + r.stdout, (args, r.stderr)
        assert "Traceback" not in r.stderr, args
    # a runtime error (missing data) exits 1 in one line; SAFEGEN_DEBUG=1 shows the traceback
    args = _fit_args(train_world, tmp_path / "run", "--train-data", str(tmp_path / "gone.jsonl"))
    r = _cli(*args)
    assert r.returncode == 1 and "gone.jsonl' does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()  # a run that failed before writing anything leaves no folder
    assert len([line for line in r.stderr.splitlines() if line.startswith("safegen-train:")]) == 1
    r = _cli(*args, env={"SAFEGEN_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("lr=.inf", "lr"),
        ("lr=.nan", "lr"),
        ("loss.text_safe=.nan", "loss.text_safe"),
        ("weight_decay=-1", "weight_decay"),
    ],
)
def test_non_finite_and_negative_values_name_the_field(override, field):
    r = runner.invoke(app, ["fit", "--model", "m", "--train-data", "d.jsonl", "--set", override, "--dry-run"])
    assert r.exit_code == 2 and f"{field} must be" in r.output


# ----------------------------------------------------------------------------- run folders and locks


def test_fit_refuses_an_existing_run_unless_resume_or_overwrite(train_world, tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, _fit_args(train_world, out)).exit_code == 0
    metrics = (out / "metrics.jsonl").read_text()
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(app, _fit_args(train_world, out))
    assert r.exit_code == 2 and "already holds a run" in r.output and "--overwrite" in r.output
    assert (out / "metrics.jsonl").read_text() == metrics  # nothing touched
    r = runner.invoke(app, _fit_args(train_world, out, "--resume", "latest", "--overwrite"))
    assert r.exit_code == 2 and "contradict" in r.output
    r = runner.invoke(app, _fit_args(train_world, out, "--overwrite", "--set", "lr=0.02"))
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]  # the new run alone, not both
    assert all(x["lr"] == 0.02 for x in lines)
    assert (out / "notes.txt").read_text() == "mine"  # a user's file in the run folder stays
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, _fit_args(train_world, tmp_path / "afile"))
    assert r.exit_code == 2 and "is a file" in r.output


def test_second_process_on_a_run_folder_is_refused_with_the_holder(train_world, tmp_path):
    from safegen_train.run_folder import RunLock

    out = tmp_path / "locked"
    with RunLock(out):
        r = _cli(*_fit_args(train_world, out))
        assert r.returncode == 1, r.stderr
        assert f"in use by pid {os.getpid()}" in r.stderr and "Traceback" not in r.stderr
        assert not (out / "metrics.jsonl").exists()
    # released: the same command now runs
    assert runner.invoke(app, _fit_args(train_world, out)).exit_code == 0
    assert (out / "metrics.jsonl").is_file()


# ----------------------------------------------------------------------------- export folders


@pytest.fixture(scope="module")
def checkpoint(train_world):
    out = train_world["root"] / "export_run"
    r = runner.invoke(app, _fit_args(train_world, out))
    assert r.exit_code == 0, r.output
    return out / "checkpoints" / "step-00000002"


def _export(checkpoint, out, *extra):
    return runner.invoke(app, ["export", str(checkpoint), str(out), "--what", "text", *extra])


def test_export_never_destroys_a_users_folder(checkpoint, tmp_path):
    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    (user / "keep.txt").write_text("precious")
    (user / "README.md").write_text("my readme")
    r = _export(checkpoint, user)
    assert r.exit_code == 2 and "did not write (README.md, keep.txt, sub)" in r.output and "--overwrite" in r.output
    assert sorted(p.name for p in user.iterdir()) == ["README.md", "keep.txt", "sub"]
    r = _export(checkpoint, user, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (user / "keep.txt").read_text() == "precious" and (user / "sub").is_dir()
    assert (user / "README.md.before-export").read_text() == "my readme"  # renamed, not deleted
    assert (user / "model.safetensors").is_file() and (user / ".safegen-export.json").is_file()


def test_export_replaces_its_own_export_and_keeps_added_files(checkpoint, tmp_path):
    out = tmp_path / "exp"
    assert _export(checkpoint, out).exit_code == 0
    listed = set(json.loads((out / ".safegen-export.json").read_text())["files"])
    assert {"model.safetensors", "config.json", "README.md"} <= listed
    (out / "mine.txt").write_text("added later")
    r = runner.invoke(app, ["export", str(checkpoint), str(out), "--what", "vision"])  # no --overwrite needed
    assert r.exit_code == 0, r.output
    assert (out / "mine.txt").read_text() == "added later"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["CLIPVisionModelWithProjection"]
    assert not (out / "tokenizer_config.json").exists()  # the text export's file, gone with it
    assert not list(out.parent.glob(".exp.*"))  # no temporary folder left behind


def test_export_refuses_dot_a_file_and_the_checkpoint_tree(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "something").write_text("x")
    r = _export(checkpoint, Path("."))
    assert r.exit_code == 2 and "current folder" in r.output
    r = _export(checkpoint, tmp_path / "something")
    assert r.exit_code == 2 and "existing file" in r.output and (tmp_path / "something").read_text() == "x"
    r = _export(checkpoint, checkpoint.parent.parent, "--overwrite")
    assert r.exit_code == 2 and "overlaps the checkpoint" in r.output


def test_eval_accepts_every_export_kind(train_world, checkpoint, tmp_path):
    for what in ("text", "vision", "model"):
        out = tmp_path / what
        assert runner.invoke(app, ["export", str(checkpoint), str(out), "--what", what]).exit_code == 0
        r = runner.invoke(
            app, ["eval", str(train_world["train"]), "--model", str(train_world["clip"]), "--safe", str(out), "--json"]
        )
        assert r.exit_code == 0, (what, r.output)
        tables = json.loads(r.stdout)["tables"]
        assert set(tables["safe"]) == {"S-V", "S-G", "U-V", "U-G"}, what


def test_export_of_a_damaged_checkpoint_names_the_file(checkpoint, tmp_path):
    import shutil

    broken = tmp_path / "step-broken"
    shutil.copytree(checkpoint, broken)
    (broken / "trainable.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    r = _export(broken, tmp_path / "out")
    assert r.exit_code == 1 and str(broken / "trainable.safetensors") in r.output and "unreadable" in r.output
    assert not (tmp_path / "out").exists()


def test_export_follows_the_umask(checkpoint, tmp_path):
    old = os.umask(0o022)
    try:
        assert _export(checkpoint, tmp_path / "perm").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "perm").stat().st_mode) == 0o755
    for f in (tmp_path / "perm").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


# ----------------------------------------------------------------------------- data rows


def test_hostile_jsonl_rows_are_skipped_and_reported(train_world, tmp_path, caplog):
    from safegen_train.trainer import fit

    lines = train_world["train"].read_text().splitlines()
    hostile = [
        '{"safe_text": "a", "unsafe_text": "b", "x": ' + "[" * 50000 + "]" * 50000 + "}",
        '{"safe_text": "a", "unsafe_text": "b", "x": ' + "7" * 5000 + "}",
    ]
    data = train_world["train"].parent / "hostile.jsonl"
    data.write_text("\n".join(lines[:4] + hostile + lines[4:]) + "\n")
    cfg = base_config(tmp_path, train_world["clip"], data, max_steps=1, skip_bad_records=True)
    with caplog.at_level("WARNING"):
        result = fit(cfg)
    assert result.global_step == 1
    assert "skipping 2 bad record(s)" in caplog.text and "hostile.jsonl:5: JSON nested too deeply" in caplog.text
    assert "hostile.jsonl:6" in caplog.text and "4300 digits" in caplog.text
    r = runner.invoke(app, _fit_args(train_world, tmp_path / "strict", "--train-data", str(data)))
    assert r.exit_code == 1 and "2 bad record(s)" in r.output and "skip_bad_records" in r.output


# ----------------------------------------------------------------------------- resume


def test_resume_latest_falls_back_past_a_damaged_checkpoint(train_world, tmp_path, caplog):
    from safegen_train.trainer import fit

    kwargs = dict(epochs=2, save_every_steps=1, keep_checkpoints=3)
    fit(base_config(tmp_path, train_world["clip"], train_world["train"], max_steps=3, **kwargs))
    newest = tmp_path / "run" / "checkpoints" / "step-00000003"
    (newest / "trainable.safetensors").write_bytes(b"\x00garbage, not safetensors")
    with caplog.at_level("WARNING"):
        resumed = fit(base_config(tmp_path, train_world["clip"], train_world["train"], resume="latest", **kwargs))
    assert str(newest / "trainable.safetensors") in caplog.text and "falling back" in caplog.text
    assert resumed.global_step == 4
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # step 3 redone from step 2's checkpoint, logged once
    # nothing readable at all: one error naming the checkpoint
    for ckpt in (tmp_path / "run" / "checkpoints").glob("step-*"):
        (ckpt / "state.json").write_text("{broken")
    r = runner.invoke(app, _fit_args(train_world, tmp_path / "run", "--resume", "latest"))
    assert r.exit_code == 1 and "no readable checkpoint" in r.output and "state.json" in r.output


def test_resume_keeps_the_start_overrides_and_refuses_changed_ones(train_world, tmp_path):
    out = tmp_path / "run"
    start = _fit_args(train_world, out, "--set", "lr=0.05", "--set", "loss.text_safe=0.3", "--max-steps", "1")
    assert runner.invoke(app, start).exit_code == 0
    # the config file / flags given at the resume lack the --set values: they are applied again
    r = runner.invoke(app, _fit_args(train_world, out, "--resume", "latest", "--epochs", "2"))
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["lr"] == 0.05 and saved["loss"]["text_safe"] == 0.3 and saved["max_steps"] is None
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and {x["lr"] for x in lines} == {0.05}
    # a resume that would change what the run learns is refused, naming the field
    r = runner.invoke(app, _fit_args(train_world, out, "--resume", "latest", "--epochs", "3", "--set", "lr=0.5"))
    assert r.exit_code == 2 and "lr: the run has 0.05, this resume gives 0.5" in r.output


# ----------------------------------------------------------------------------- public API


def test_safegen_train_imports_only_public_safegen_names():
    """Every ``from safegen... import name`` in safegen_train names a public symbol: one in
    ``safegen.__all__``, or a public (non-underscore) name of a public module."""
    import ast
    import importlib

    import safegen

    bad = []
    for path in sorted((REPO / "safegen_train").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("safegen"):
                continue
            if node.module.startswith("safegen_train"):
                continue
            for alias in node.names:
                where = f"{path.relative_to(REPO)}:{node.lineno} {node.module}.{alias.name}"
                if node.module == "safegen":
                    if alias.name not in safegen.__all__:
                        bad.append(where)
                elif any(part.startswith("_") for part in node.module.split(".")) or alias.name.startswith("_"):
                    bad.append(where)
                elif alias.name in safegen.__all__:
                    continue
                else:
                    module = importlib.import_module(node.module)
                    value = getattr(module, alias.name)
                    defined_in = getattr(value, "__module__", node.module)
                    if defined_in != node.module and not defined_in.startswith(node.module):
                        bad.append(f"{where} (re-imported from {defined_in})")
    assert not bad, bad
