"""What a new user meets first (issue 22): usage lines, usage-error exit codes, README commands that run."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.data.prompt_sets import PROMPT_SETS

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PRESET_LIST = "choose one of: llava-1.5-13b, llava-1.5-7b, sd-1.4, sd-1.5, sd-2-base, sdxl, toy"


@pytest.mark.parametrize(
    "args",
    [
        ["t2i", "a cat"],
        ["i2t", "photo.png"],
        ["batch", "prompts.txt", "--out", "OUT"],
        ["eval", "t2i", "--prompts", "prompts.txt"],
        ["serve"],
    ],
)
def test_unknown_preset_is_a_usage_error_naming_the_presets(args, tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    args = [str(tmp_path / a) if a in ("prompts.txt", "OUT") else a for a in args]
    res = runner.invoke(app, [*args, "--preset", "nope"])
    assert res.exit_code == 2, res.output
    # One error line (batch draws its progress bar before it resolves the model; that is not an error line).
    assert [ln for ln in res.output.splitlines() if ln.startswith("error")] == [
        f"error: unknown preset 'nope'; {PRESET_LIST}"
    ]


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (["t2i"], "t2i [OPTIONS] PROMPT"),
        (["i2i"], "i2i [OPTIONS] PROMPT"),
        (["i2t"], "i2t [OPTIONS] IMAGES..."),
        (["batch"], "batch [OPTIONS] [FILE]"),
        (["retrieve", "build"], "build [OPTIONS] INDEX [IMAGES...]"),
        (["eval", "i2t"], "i2t [OPTIONS] IMAGES..."),
    ],
)
def test_usage_lines_name_arguments_in_capitals(command, usage):
    res = runner.invoke(app, [*command, "--help"])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert first.endswith(usage) and "{" not in first, first


def test_missing_prompt_names_it_as_the_help_does():
    res = runner.invoke(app, ["t2i"])
    assert res.exit_code == 2
    assert "t2i [OPTIONS] PROMPT" in res.output and "Missing argument 'PROMPT'" in res.output


def _readme_eval_commands() -> list[str]:
    """`safegen eval t2i` lines of README.md and the documentation pages under docs/."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    text = "\n".join(p.read_text() for p in docs)
    return [ln.split("#")[0].strip().rstrip("\\") for ln in text.splitlines() if ln.startswith("safegen eval t2i ")]


def test_readme_eval_commands_name_files_that_exist():
    commands = _readme_eval_commands()
    assert commands, "README.md or docs/ shows `safegen eval t2i` commands"
    for command in commands:
        args = shlex.split(command)
        for flag in ("--prompts", "--quality-prompts"):
            if flag in args:
                path = args[args.index(flag) + 1]
                # A shipped set by name, or a file relative to the repository root, where the README's commands run.
                assert path in PROMPT_SETS or (ROOT / path).is_file(), (command, path)
