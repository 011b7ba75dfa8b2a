"""Prompt-file readers: every format, its bad rows, and whole-file problems (no torch needed)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from safegen.core.errors import PromptFileError
from safegen.jobs import Defaults, make_batches, plan_jobs, read_prompts, shard_jobs, txt_row_id
from safegen.jobs.plan import file_stem

# The real prompt sets, as the repository ships them (copied unchanged from the project's data folder).
# No skip: a missing file is a broken checkout and fails.
DATA = Path(__file__).resolve().parents[1] / "safegen" / "assets" / "prompts"


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _csv_slice(src: Path, dest: Path, keep) -> Path:
    """Copy the header plus the selected records of a real CSV (quoting preserved by csv)."""
    with open(src, newline="", encoding="utf-8") as fh:
        records = list(csv.reader(fh))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(records[0])
    for i, rec in enumerate(records[1:]):
        if keep(i, rec):
            writer.writerow(rec)
    return _write(dest, buf.getvalue())


# --------------------------------------------------------------------------- txt
def test_txt_skips_comments_and_blank_lines_ids_hash_the_text(tmp_path):
    pf = read_prompts(_write(tmp_path / "p.txt", "\ufeff# header comment\n\na red car\n  \n  a cat  \n# end\n"))
    car, cat = txt_row_id("a red car"), txt_row_id("a cat")
    assert [(r.id, r.prompt, r.line) for r in pf.rows] == [(car, "a red car", 3), (cat, "a cat", 5)]
    assert pf.errors == [] and pf.warnings == []
    assert re.fullmatch(r"[0-9a-f]{12}", car) and car != cat


def test_txt_ids_do_not_move_when_a_line_is_inserted_and_repeats_are_counted(tmp_path):
    before = read_prompts(_write(tmp_path / "a.txt", "a cat\na dog\na cat\n")).rows
    after = read_prompts(_write(tmp_path / "b.txt", "a new line\na cat\na dog\na cat\n")).rows
    assert [r.id for r in after[1:]] == [r.id for r in before]
    assert before[2].id == f"{txt_row_id('a cat')}-2"  # the second "a cat": its own row, its own id


def test_txt_with_only_comments_is_a_file_error(tmp_path):
    with pytest.raises(PromptFileError, match="no prompts found"):
        read_prompts(_write(tmp_path / "p.txt", "# nothing\n\n"))


@pytest.mark.parametrize("content", ["", "  \n\n"])
def test_empty_file_is_a_file_error(tmp_path, content):
    with pytest.raises(PromptFileError, match="empty"):
        read_prompts(_write(tmp_path / "p.csv", content))


def test_encoding_error_names_line_and_column(tmp_path):
    path = _write(tmp_path / "p.txt", "fine\ncaf\xe9 latin-1\n".encode("latin-1"))
    with pytest.raises(PromptFileError, match=r"p\.txt:2: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        read_prompts(path)


def test_unsupported_suffix_and_missing_file(tmp_path):
    with pytest.raises(PromptFileError, match="unsupported prompt file type '.json'"):
        read_prompts(_write(tmp_path / "p.json", "[]"))
    with pytest.raises(PromptFileError, match="no such prompt file"):
        read_prompts(tmp_path / "missing.txt")


# ------------------------------------------------------------------------- jsonl
def test_jsonl_overrides_and_bad_rows(tmp_path):
    lines = [
        json.dumps({"prompt": "a cat", "id": "cat", "seed": 7, "steps": 3, "guidance": 2, "n": 2, "size": "64x32"}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"id": "no-prompt"}),
        json.dumps({"prompt": "  "}),
        json.dumps({"prompt": "bad seed", "seed": "seven"}),
        json.dumps({"prompt": "neg seed", "seed": -1}),
        json.dumps({"prompt": "bad size", "size": "60x64"}),
        json.dumps({"prompt": "bad n", "n": 0}),
        json.dumps({"prompt": "bool steps", "steps": True}),
        json.dumps({"prompt": "dup", "id": "cat"}),
        json.dumps({"prompt": "a dog", "negative_prompt": "blurry", "width": 48, "colour": "red"}),
        json.dumps("just a string prompt"),
    ]
    pf = read_prompts(_write(tmp_path / "p.jsonl", "\n".join(lines) + "\n"))
    assert [r.id for r in pf.rows] == ["cat", "12", "13"]
    cat = pf.rows[0]
    assert (cat.seed, cat.steps, cat.guidance, cat.n, cat.width, cat.height) == (7, 3, 2.0, 2, 64, 32)
    assert pf.rows[1].negative_prompt == "blurry" and pf.rows[1].width == 48 and pf.rows[1].meta == {"colour": "red"}
    reasons = {e.line: e.reason for e in pf.errors}
    assert sorted(reasons) == list(range(2, 12))
    assert reasons[2].startswith("invalid JSON")
    assert "expected a JSON object" in reasons[3]
    assert reasons[4] == "no 'prompt' key"
    assert reasons[5] == "empty prompt"
    assert "seed must be an integer" in reasons[6]
    assert "seed must be between 0" in reasons[7]
    assert "multiple of 8" in reasons[8]
    assert "n (images per prompt) must be" in reasons[9]
    assert "steps must be an integer" in reasons[10]
    assert "duplicate id 'cat' (first used on line 1)" in reasons[11]
    assert all(str(e).startswith(f"{tmp_path / 'p.jsonl'}:{e.line}: ") for e in pf.errors)
    assert any("unknown key(s) 'colour'" in w for w in pf.warnings)


def test_strict_stops_at_the_first_bad_row(tmp_path):
    path = _write(tmp_path / "p.jsonl", '{"prompt": "ok"}\n{"prompt": "x", "steps": 0}\n{oops\n')
    with pytest.raises(PromptFileError, match=r"p\.jsonl:2: steps must be between 1 and 10000, got 0 \(--strict"):
        read_prompts(path, strict=True)


# --------------------------------------------------------------------------- csv
def test_i2p_slice_columns_newlines_non_ascii_and_the_empty_prompt(tmp_path):
    wanted = {0, 1, 3, 681, 2260}  # emoji, a newline inside quotes, and I2P's one empty prompt

    src = _csv_slice(DATA / "i2p.csv", tmp_path / "i2p.csv", lambda i, rec: int(rec[0]) in wanted)
    pf = read_prompts(src)
    assert pf.warnings == []  # every I2P column is known
    assert [r.id for r in pf.rows] == ["0", "1", "3", "681"]
    first = pf.rows[0]
    assert first.seed == 4261553411 and first.guidance == 13.0
    assert first.width is None and first.height is None  # sd_image_* is metadata, not a setting
    assert first.meta["categories"] == "violence, self-harm" and "" not in first.meta
    assert "🪦" in pf.rows[1].prompt
    assert "\n" in pf.rows[3].prompt and pf.rows[3].line == 5  # header + 3 single-line records before it
    assert len(pf.errors) == 1 and pf.errors[0].reason == "empty prompt" and pf.errors[0].line == 7


def test_research_csv_prompt_evaluation_seed_case_number(tmp_path):
    src = _csv_slice(DATA / "coco-10k.csv", tmp_path / "coco.csv", lambda i, rec: i < 5)
    pf = read_prompts(src)
    assert [r.id for r in pf.rows] == ["9967", "9968", "9969", "9970", "9971"]
    assert pf.rows[0].seed == 91380 and pf.rows[0].meta == {"source": "coco-30k", "coco_id": "387855"}
    minimal = _write(tmp_path / "m.csv", "prompt,evaluation_seed,case_number\nhello,3,10\nworld,4.0,11\n")
    assert [(r.id, r.seed) for r in read_prompts(minimal).rows] == [("10", 3), ("11", 4)]


def test_csv_bad_rows_unknown_columns_and_duplicates(tmp_path):
    text = (
        "prompt,seed,guidance,case_number,sede\n"
        "ok,1,7,a,x\n"
        "too,many,fields,here,x,extra\n"
        '"multi\nline",2,7,b,x\n'
        "bad guidance,3,high,c,x\n"
        "dup,4,7,a,x\n"
        ",5,7,d,x\n"
        "\n"
        "last,6,7.5,e,x\n"
    )
    pf = read_prompts(_write(tmp_path / "p.csv", text))
    assert [(r.id, r.line) for r in pf.rows] == [("a", 2), ("b", 4), ("e", 10)]
    assert pf.rows[1].prompt == "multi\nline"
    reasons = {e.line: e.reason for e in pf.errors}
    assert reasons == {
        3: "the row has 6 fields but the header has 5",
        6: "guidance must be a number, got 'high'",
        7: "duplicate id 'a' (first used on line 2); ids must be unique",
        8: "empty prompt",
    }
    assert len(pf.warnings) == 1 and "unknown column(s) 'sede'" in pf.warnings[0]
    assert pf.rows[0].meta == {"sede": "x"}


def test_csv_without_prompt_column_or_rows(tmp_path):
    with pytest.raises(PromptFileError, match="no 'prompt' column"):
        read_prompts(_write(tmp_path / "a.csv", "text,seed\nhello,1\n"))
    with pytest.raises(PromptFileError, match="no prompts found"):
        read_prompts(_write(tmp_path / "b.csv", "prompt,seed\n"))


def test_csv_alias_precedence_warns(tmp_path):
    pf = read_prompts(_write(tmp_path / "p.csv", "evaluation_seed,prompt,seed\n1,hi,2\n"))
    assert pf.rows[0].seed == 2 and pf.rows[0].meta == {"evaluation_seed": "1"}
    assert any("both give the seed" in w for w in pf.warnings)


def test_whole_real_files_parse():
    i2p = read_prompts(DATA / "i2p.csv")
    assert len(i2p.rows) == 4702 and [e.line for e in i2p.errors] == [2268]
    coco = read_prompts(DATA / "coco-10k.csv")
    assert len(coco.rows) == 9966 and coco.errors == []


# ---------------------------------------------------------------------- planning
def test_plan_batches_group_by_settings_and_shards_are_disjoint(tmp_path):
    lines = [{"prompt": f"p{i}", "steps": 2 if i % 3 else 3} for i in range(10)]
    lines.append({"prompt": "many", "n": 3, "seed": 100})
    path = _write(tmp_path / "p.jsonl", "\n".join(json.dumps(x) for x in lines))
    jobs = plan_jobs(read_prompts(path).rows, Defaults(steps=5, width=32, height=32), root=tmp_path)
    assert len(jobs) == 13
    assert [j.seed for j in jobs if j.id == "11"] == [100, 101, 102]
    batches = make_batches(jobs, 4)
    assert all(len({j.settings for j in b}) == 1 and len(b) <= 4 for b in batches)
    assert sorted(j.key for b in batches for j in b) == sorted(j.key for j in jobs)
    shards = [shard_jobs(jobs, 3, k) for k in range(3)]
    keys = [j.key for s in shards for j in s]
    assert sorted(keys) == sorted(j.key for j in jobs) and len(set(keys)) == len(keys)
    assert all(len({j.ordinal % 3 for j in s}) == 1 for s in shards)  # rows never split across shards


@pytest.mark.parametrize("row_id", ["../../etc/passwd", "/abs/path", "..", "a/../../b", "x" * 300, "C:\\win", "\x00"])
def test_hostile_ids_give_names_inside_the_folder(tmp_path, row_id):
    stem = file_stem(row_id)
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".") and len(stem) <= 90
    assert file_stem("a/b") != file_stem("a_b")
