"""CI fails rather than skips: a test the suite depends on that cannot run is a red run, not a green one.

Checked on copies, never on the real CI script's last step (`./run test`, the whole suite);
the documentation build it runs before the tests is checked with a stub mkdocs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fake_checkout(tmp_path: Path) -> Path:
    """.ci/run beside a stub ./run that only records it was called."""
    root = tmp_path / "checkout"
    (root / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", root / ".ci" / "run")
    (root / "run").write_text('#!/usr/bin/env bash\necho "$@" > "$(dirname "$0")/ran"\n')
    (root / "run").chmod(0o755)
    return root


def _stub_path(tmp_path: Path, apt_get_exit: int) -> str:
    """A PATH with the few tools .ci/run uses, no chromium, and an apt-get that exits ``apt_get_exit``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "id", "env"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    (bin_dir / "apt-get").write_text(f"#!/usr/bin/env bash\necho apt-get \"$@\" >&2\nexit {apt_get_exit}\n")
    (bin_dir / "apt-get").chmod(0o755)
    return str(bin_dir)


def test_ci_run_fails_when_chromium_cannot_be_installed(tmp_path):
    root = _fake_checkout(tmp_path)
    env = {"PATH": _stub_path(tmp_path, apt_get_exit=100), "HOME": str(tmp_path)}
    res = subprocess.run(["bash", str(root / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0, res.stderr
    assert "chromium" in res.stderr and "failing" in res.stderr
    assert not (root / "ran").exists()  # the suite never started with the browser test bound to skip


@pytest.mark.parametrize("mkdocs_exit", [0, 1])
def test_ci_run_builds_the_docs_strictly_before_the_tests(tmp_path, mkdocs_exit):
    root = _fake_checkout(tmp_path)
    (root / "run").write_text('#!/usr/bin/env bash\necho "run $*" >> "$(dirname "$0")/calls"\n')
    mkdocs = root / ".venv" / "bin" / "mkdocs"
    mkdocs.parent.mkdir(parents=True)
    mkdocs.write_text(f'#!/usr/bin/env bash\necho "mkdocs $*" >> "$(dirname "$0")/../../calls"\nexit {mkdocs_exit}\n')
    mkdocs.chmod(0o755)
    bin_dir = Path(_stub_path(tmp_path, apt_get_exit=100))
    for tool in ("mktemp", "rm"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    (bin_dir / "chromium").write_text("#!/usr/bin/env bash\n")  # present: no apt-get
    (bin_dir / "chromium").chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    res = subprocess.run(["bash", str(root / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    calls = (root / "calls").read_text().splitlines()
    assert calls[0] == "run install"
    build = calls[1].split()
    assert build[:3] == ["mkdocs", "build", "--strict"] and "--site-dir" in build
    assert not Path(build[build.index("--site-dir") + 1]).exists()  # a scratch folder, removed; never site/
    if mkdocs_exit:
        assert res.returncode != 0 and calls == ["run install", calls[1]]  # a broken site stops CI before the tests
    else:
        assert res.returncode == 0, res.stderr
        assert calls[2:] == ["run test"]


def _run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=folder)


def test_a_missing_dependency_skips_locally_and_fails_under_ci(tmp_path):
    shutil.copy2(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")  # the hook under test
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.needs(False, reason='chromium is not installed')\n"
        "def test_browser():\n    pass\n\n"
        "@pytest.mark.needs(True, reason='present')\n"
        "def test_present():\n    pass\n"
    )
    local = _run_pytest(tmp_path, None)
    assert local.returncode == 0 and "1 passed, 1 skipped" in local.stdout, local.stdout
    ci = _run_pytest(tmp_path, "true")
    assert ci.returncode == 1 and "1 passed, 1 error" in ci.stdout, ci.stdout  # an error at setup: a red run
    assert "cannot run: chromium is not installed" in ci.stdout
    assert _run_pytest(tmp_path, "0").returncode == 0  # CI=0 / false: a developer's machine
