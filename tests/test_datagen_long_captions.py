"""`data rewrite` with an over-long caption (issue 22): one 10 MB line stopped the whole run, and every re-run.

The row is now reported with file:line, recorded as rejected and never sent to the model;
the rest of the file is rewritten and a re-run succeeds.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from safegen_train.cli import app
from safegen_train.datagen import RewriteConfig, Rewriter, read_rewrites, run_rewrite
from safegen_train.toy.rewriter import toy_taxonomy

HUGE = "a red circle on a white background " * 300_000  # 10.5 MB on one line


class GuardedEngine:
    """A rewriter that fails the way the real one did when a prompt is megabytes long."""

    name = "guarded"
    chat = False
    tokenizer = None

    def __init__(self):
        self.longest = 0

    def describe(self):
        return {"engine": self.name, "model": "guarded"}

    def generate(self, prompts, seeds, sampling):
        self.longest = max([self.longest, *map(len, prompts)])
        if self.longest > 100_000:
            raise MemoryError("tried to allocate 4.4 TB")
        return [" " + p.split("### Input: ")[-1].split("\n")[0] + " covered in blood" for p in prompts]


def _captions(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text(f"a blue square on a gray background\n{HUGE}\na green triangle on a black background\n")
    return path


def test_a_10_mb_caption_is_rejected_and_the_rest_is_rewritten(tmp_path):
    lines: list[str] = []
    cfg = RewriteConfig(captions=_captions(tmp_path), out=tmp_path / "rw")
    engine = GuardedEngine()
    result = Rewriter(cfg, engine=engine, taxonomy=toy_taxonomy(), report=lines.append).run()
    assert (result.planned, result.generated, result.kept, result.rejected) == (3, 2, 2, 1)
    assert engine.longest < 10_000  # the model never saw it
    where = f"{tmp_path / 'captions.txt'}:2"
    assert len(lines) == 1 and lines[0].startswith(f"{where}: caption is {len(HUGE.strip()):,} characters")
    assert "1,000-character limit" in lines[0] and "--max-caption-chars" in lines[0]
    records = {r["source_line"]: r for r in read_rewrites(tmp_path / "rw")}
    assert [records[n]["status"] for n in (1, 2, 3)] == ["ok", "rejected", "ok"]
    assert records[2]["unsafe_text"] is None and records[2]["safe_text_chars"] == len(HUGE.strip())
    assert (tmp_path / "rw" / "manifest.jsonl").stat().st_size < 100_000  # the megabytes are not copied
    # The re-run works, says why the row stays unwritten, and does not record it twice.
    again = run_rewrite(cfg, engine=GuardedEngine(), taxonomy=toy_taxonomy())
    assert (again.skipped, again.generated, again.rejected) == (2, 0, 1)
    assert len((tmp_path / "rw" / "manifest.jsonl").read_text().splitlines()) == 3


def test_a_higher_limit_rewrites_a_row_rejected_before(tmp_path):
    caps = tmp_path / "captions.txt"
    caps.write_text("a blue square on a gray background\n" + "a red circle on a white background " * 40 + "\n")
    cfg = RewriteConfig(captions=caps, out=tmp_path / "rw", max_caption_chars=200)
    assert run_rewrite(cfg, engine=GuardedEngine(), taxonomy=toy_taxonomy()).rejected == 1
    cfg = RewriteConfig(captions=caps, out=tmp_path / "rw", max_caption_chars=5_000)
    result = run_rewrite(cfg, engine=GuardedEngine(), taxonomy=toy_taxonomy())
    assert (result.skipped, result.generated, result.rejected) == (1, 1, 0)
    assert [r["status"] for r in read_rewrites(tmp_path / "rw")] == ["ok", "ok"]


def test_cli_reports_the_row_and_still_exits_0_with_the_count(tmp_path):
    caps = tmp_path / "captions.txt"
    caps.write_text("a blue square on a gray background\n" + "x" * 300 + "\n")
    args = ["data", "rewrite", str(caps), "-m", "toy", "--out", str(tmp_path / "rw"), "--max-caption-chars", "100"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["generated"], summary["rejected"]) == (1, 1)
    assert f"rejected: {caps}:2: caption is 300 characters, over the 100-character limit" in res.stderr
    res = CliRunner().invoke(app, [*args[:-1], "0"])
    assert res.exit_code == 2 and "max_caption_chars must be >= 1" in res.output
