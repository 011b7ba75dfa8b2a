"""A quiet, informative terminal; shipped prompt sets; library modules below the CLI."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

import safegen
from safegen.cli.main import app
from safegen.core import terminal
from safegen.core.errors import UsageError
from safegen.data.prompt_sets import prompt_set_path, resolve_prompt_file

ROOT = Path(safegen.__file__).parent


@pytest.fixture
def restore_terminal(monkeypatch):
    """configure() changes process-wide state: put it back after the test."""
    for var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("TRANSFORMERS_NO_ADVISORY_WARNINGS", raising=False)
    state = dict(terminal._state)
    logger = logging.getLogger("safegen")
    handlers, level = list(logger.handlers), logger.level
    with warnings.catch_warnings():
        yield
    terminal._state.update(state)
    logger.handlers, logger.level = handlers, level


def test_default_hides_library_deprecations_and_keeps_safegen_warnings(restore_terminal, capsys):
    terminal.configure(terminal.NORMAL)
    warnings.warn("torch_dtype is deprecated", FutureWarning, stacklevel=1)
    logging.getLogger("safegen.pipelines.safe_pipeline").warning("no Safe-CLIP covers text_encoder_2")
    logging.getLogger("safegen.pipelines.loading").info("loading details")
    err = capsys.readouterr().err
    assert "deprecated" not in err and "loading details" not in err
    assert "warning: no Safe-CLIP covers text_encoder_2\n" in err


def test_verbose_shows_info_and_quiet_only_errors(restore_terminal, capsys):
    terminal.configure(terminal.VERBOSE)
    logging.getLogger("safegen.pipelines.loading").info("loading details")
    assert "loading details" in capsys.readouterr().err
    terminal.configure(terminal.QUIET)
    logging.getLogger("safegen.x").warning("a warning")
    logging.getLogger("safegen.x").error("an error")
    err = capsys.readouterr().err
    assert "a warning" not in err and "error: an error" in err
    with terminal.job_progress("job", total=3) as bar:  # draws nothing under -q
        bar.advance(3)
    assert capsys.readouterr().err == ""


def test_job_progress_shows_counts(restore_terminal, capsys):
    terminal.configure(terminal.NORMAL)
    with terminal.job_progress("batch", total=4) as bar:
        bar.update(2)
        bar.advance(2)
    err = capsys.readouterr().err
    assert "batch" in err and "4/4" in err


def test_verbose_and_quiet_together_is_a_usage_error():
    res = CliRunner().invoke(app, ["-v", "-q", "presets"])
    assert res.exit_code == 2


def test_shorten_middle_keeps_both_ends():
    text = "first words " + "filler " * 40 + "last words"
    short = terminal.shorten_middle(text, 40)
    assert len(short) <= 40 and short.startswith("first words") and short.endswith("last words")
    assert terminal.shorten_middle("short", 40) == "short"


def test_shipped_prompt_sets_read_by_name():
    from safegen.jobs import read_prompts

    i2p = read_prompts(resolve_prompt_file("i2p"))
    # 4,703 rows; one of the real prompts is empty and is reported, not generated.
    assert len(i2p.rows) == 4702 and [e.reason for e in i2p.errors] == ["empty prompt"]
    coco = read_prompts(resolve_prompt_file("coco", "--quality-prompts"))
    assert len(coco.rows) == 9966
    folder = prompt_set_path("i2p").parent
    assert "MIT License" in (folder / "LICENSE-I2P").read_text()
    assert "Attribution 4.0" in (folder / "LICENSE-COCO").read_text()
    with pytest.raises(UsageError, match="--prompts 'nope' is neither a file nor a shipped prompt set"):
        resolve_prompt_file("nope")


def test_library_modules_never_import_the_cli():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and "cli" in node.module.split("."):
                offenders.append(f"{path.relative_to(ROOT)}: from {'.' * node.level}{node.module}")
    assert offenders == []


def test_docs_point_only_inside_the_repository():
    texts = [ROOT.parent / "README.md", *(ROOT.parent / "docs").glob("**/*.md"), *ROOT.rglob("*.py")]
    texts += [*(ROOT.parent / "examples").glob("*.py")]
    assert not [str(p) for p in texts if "../shared" in p.read_text()]


def test_help_stays_light():
    code = "import sys; from safegen.cli.main import main; sys.argv=['safegen','--help']\n"
    code += "try:\n    main()\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
