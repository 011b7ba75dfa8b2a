"""Files a user owns: every command that writes a folder refuses one holding files safegen did not write.

The rule lives in :mod:`safegen.core.output_folder`; these tests check it once as a unit and then
against every writing command, which must exit 2 with one line naming the folder and the files,
and leave the user's files byte-identical (no lock file or marker dropped beside them either).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safegen.cli.main import app as safegen_app
from safegen.core.errors import UsageError
from safegen.core.output_folder import (
    MARKER,
    ForeignFolderError,
    check_output_folder,
    claim_output_folder,
    folder_owner,
    output_folder,
)
from safegen_train.cli import app as train_app

runner = CliRunner()

# What a user keeps in a folder: the names commands write themselves, so a careless write would hit them.
USER_FILES = {
    "README.md": b"# my notes\n",
    "train.jsonl": b'{"mine": 1}\n',
    "manifest.jsonl": b"line one\nline two, no newline at the end",
    "run.json": b'{"my": "run"}\n',
    "index.json": b"{}\n",
}


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, data in USER_FILES.items():
        (path / name).write_bytes(data)
    return path


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


# ----------------------------------------------------------------------------- the rule itself


def test_missing_and_empty_folders_are_claimed_and_resumed(tmp_path):
    new = tmp_path / "a" / "new"
    assert claim_output_folder(new, "safegen batch") is True
    assert json.loads((new / MARKER).read_text())["command"] == "safegen batch"
    (new / "manifest.jsonl").write_text("{}\n")
    assert claim_output_folder(new, "safegen batch") is False  # its own folder: resumed
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_output_folder(empty, "safegen batch") is False and (empty / MARKER).is_file()


def test_a_users_folder_is_refused_naming_it_and_its_files(tmp_path):
    user = _user_folder(tmp_path / "mine")
    before = _snapshot(user)
    with pytest.raises(ForeignFolderError) as info:
        claim_output_folder(user, "safegen-train data build")
    msg = str(info.value)
    assert str(user) in msg and "README.md" in msg and "did not write" in msg and "choose a new or empty" in msg
    assert isinstance(info.value, UsageError)  # exit 2 in both CLIs
    assert _snapshot(user) == before


def test_another_commands_folder_is_refused(tmp_path):
    out = tmp_path / "batch"
    claim_output_folder(out, "safegen batch")
    (out / "manifest.jsonl").write_text('{"id": "0"}\n')
    with pytest.raises(ForeignFolderError, match=r"output of `safegen batch`, not of `safegen-train data rewrite`"):
        check_output_folder(out, "safegen-train data rewrite")


def test_a_hand_over_marker_and_older_safegen_folders_are_accepted(tmp_path):
    handed = _user_folder(tmp_path / "handed")
    (handed / MARKER).write_text("")  # touch DIR/.safegen-output.json
    assert claim_output_folder(handed, "safegen batch") is False
    assert json.loads((handed / MARKER).read_text())["command"] == "safegen batch"
    older = _user_folder(tmp_path / "older")
    (older / ".safegen.lock").write_text("")  # what a batch run left before the marker existed
    assert folder_owner(older)[0] == ""
    check_output_folder(older, "safegen batch")
    export = tmp_path / "export"
    export.mkdir()
    (export / ".safegen-export.json").write_text('{"files": []}')
    assert folder_owner(export)[0] == "safegen-train export"
    with pytest.raises(ForeignFolderError, match="safegen-train export"):
        check_output_folder(export, "safegen-train data build")


def test_a_folder_left_without_output_is_removed_again(tmp_path):
    out = tmp_path / "fails"
    with pytest.raises(RuntimeError), output_folder(out, "safegen eval t2i"):
        assert (out / MARKER).is_file()
        raise RuntimeError("model failed to load")
    assert not out.exists()
    with output_folder(out, "safegen eval t2i"):
        (out / "report.json").write_text("{}")
    assert (out / "report.json").is_file() and (out / MARKER).is_file()


# ----------------------------------------------------------------------------- every writing command


@pytest.fixture()
def inputs(tmp_path):
    """Inputs good enough for each command to reach its output folder (nothing loads before the refusal)."""
    d = tmp_path / "inputs"
    d.mkdir()
    (d / "prompts.txt").write_text("a red circle\n")
    (d / "texts.txt").write_text("a red circle\n")
    (d / "data.jsonl").write_text('{"safe_text": "a", "unsafe_text": "b"}\n')
    (d / "ckpt").mkdir()
    (d / "ckpt" / "state.json").write_text("{}")
    return d


SAFEGEN = {
    "t2i": ["t2i", "a red circle", "--preset", "toy", "--out", "{out}"],
    "i2i": ["i2i", "a red circle", "--image", "{inputs}/photo.png", "--preset", "toy", "--out", "{out}"],
    "batch": ["batch", "{inputs}/prompts.txt", "--preset", "toy", "--out", "{out}"],
    "i2t": ["i2t", "{inputs}/photo.png", "--preset", "toy", "--out", "{out}"],
    "retrieve build": ["retrieve", "build", "{out}", "--texts", "{inputs}/texts.txt", "--model", "clip"],
    "retrieve add": ["retrieve", "add", "{out}", "--texts", "{inputs}/texts.txt"],
    "eval t2i": ["eval", "t2i", "--prompts", "{inputs}/prompts.txt", "--preset", "toy", "--out", "{out}"],
    "eval i2t": ["eval", "i2t", "{inputs}/photo.png", "--preset", "toy", "--out", "{out}"],
    "eval retrieval": ["eval", "retrieval", "{inputs}/data.jsonl", "--preset", "toy", "--out", "{out}"],
    "eval attack": ["eval", "attack", "--prompts", "{inputs}/prompts.txt", "--preset", "toy", "--out", "{out}"],
}
TRAIN = {
    "data rewrite": ["data", "rewrite", "{inputs}/texts.txt", "-m", "toy", "-o", "{out}"],
    "data filter": ["data", "filter", "{inputs}/rewrites", "-o", "{out}"],
    "data render": ["data", "render", "{inputs}/filtered", "-o", "{out}", "--preset", "toy"],
    "data build": ["data", "build", "{inputs}/filtered", "-o", "{out}"],
    "data preprocess": ["data", "preprocess", "{inputs}/data.jsonl", "-o", "{out}", "-m", "clip"],
    "data toy-rewriter": ["data", "toy-rewriter", "{out}"],
    "fit": ["fit", "--model", "clip", "--train-data", "{inputs}/data.jsonl", "--output-dir", "{out}"],
    "fit --overwrite": ["fit", "-m", "clip", "--train-data", "{inputs}/data.jsonl", "-o", "{out}", "--overwrite"],
    "export": ["export", "{inputs}/ckpt", "{out}"],
}


@pytest.mark.parametrize(
    ("app", "argv"),
    [(safegen_app, v) for v in SAFEGEN.values()] + [(train_app, v) for v in TRAIN.values()],
    ids=[f"safegen {k}" for k in SAFEGEN] + [f"safegen-train {k}" for k in TRAIN],
)
def test_every_writing_command_refuses_a_users_folder(app, argv, inputs, tmp_path):
    user = _user_folder(tmp_path / "user files")
    before = _snapshot(user)
    args = [a.format(out=user, inputs=inputs) for a in argv]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1, r.output  # one line: which folder, which files, what to do
    assert str(user) in lines[0] and "README.md" in lines[0] and "did not write" in lines[0]
    assert _snapshot(user) == before  # byte-identical, and nothing added beside them


def test_data_rewrite_does_not_resume_into_a_batch_folder(tmp_path, inputs):
    out = tmp_path / "batch"
    claim_output_folder(out, "safegen batch")
    (out / "manifest.jsonl").write_bytes(b'{"id": "0", "seed": 1}\n{"id": "1", "se')  # a torn batch manifest
    before = _snapshot(out)
    r = runner.invoke(train_app, ["data", "rewrite", str(inputs / "texts.txt"), "-m", "toy", "-o", str(out)])
    assert r.exit_code == 2 and "output of `safegen batch`" in r.output
    assert _snapshot(out) == before


def test_build_and_rewrite_keep_a_users_files_end_to_end(tmp_path):
    """The issue's two cases with real inputs: build's README.md/train.jsonl, rewrite's manifest.jsonl/run.json."""
    from test_datagen import ScriptedEngine

    from safegen_train.datagen import BuildConfig, FilterConfig, RewriteConfig, run_build, run_filters, run_rewrite
    from safegen_train.toy.rewriter import toy_taxonomy

    caps = tmp_path / "c.txt"
    caps.write_text("a cat on a sofa\na dog in a park\n")
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    with pytest.raises(ForeignFolderError):
        run_rewrite(RewriteConfig(captions=caps, out=user), engine=ScriptedEngine(), taxonomy=toy_taxonomy())
    run_rewrite(RewriteConfig(captions=caps, out=tmp_path / "rw"), engine=ScriptedEngine(), taxonomy=toy_taxonomy())
    run_filters(FilterConfig(rewrites=tmp_path / "rw", out=tmp_path / "flt"))
    with pytest.raises(ForeignFolderError):
        run_build(BuildConfig(source=tmp_path / "flt", out=user))
    assert _snapshot(user) == before
    # its own folders are resumed / rebuilt as before
    first = run_build(BuildConfig(source=tmp_path / "flt", out=tmp_path / "ds"))
    again = run_build(BuildConfig(source=tmp_path / "flt", out=tmp_path / "ds"))
    assert first.rows == again.rows > 0
    resumed = run_rewrite(
        RewriteConfig(captions=caps, out=tmp_path / "rw"), engine=ScriptedEngine(), taxonomy=toy_taxonomy()
    )
    assert resumed.skipped == resumed.planned and resumed.generated == 0
