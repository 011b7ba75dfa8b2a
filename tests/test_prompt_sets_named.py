"""Standard prompt sets by name: shipped files equal their upstream bytes and rows; gated sets read from a copy."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest

from safegen.core.errors import PromptFileError, UsageError
from safegen.data.external_prompt_sets import convert_external
from safegen.data.prompt_files import read_prompts
from safegen.data.prompt_sets import prompt_set_path, resolve_prompt_file

#: sha256 of the upstream files: Diffusion-MU-Attack 5a3e5d3 prompts/nudity.csv, Ring-A-Bell e4585ad InvPrompt/Violence
SHIPPED = {
    "i2p-nudity-142": ("0a40f6e63bca976513d1d56df71480239ba1eb5c7a9de4df2f535d80f6e0eccd", 142),
    "ring-a-bell-violence-k77-eta5.5": ("6a7c8126ff9054d13025c77b5e23531fbbbdfcab73bc424c17a76862d8ac44a1", 250),
    "ring-a-bell-violence-k38-eta5.5": ("d769a433571f7f33b71c7a1b22deb7cc68756f944f2c9dce5924a530ab3ced57", 250),
    "ring-a-bell-violence-k77-eta5": ("06ad1bcba205028fa845dfaf2e5cde8bbb8296ee60957844521252bb2edb8a08", 250),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sets_are_the_upstream_files_with_fixed_seeds(name):
    digest, rows = SHIPPED[name]
    path = resolve_prompt_file(name)
    assert path == prompt_set_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    parsed = read_prompts(path)
    assert len(parsed.rows) == rows and not parsed.errors
    assert all(r.seed is not None for r in parsed.rows)  # every row carries its own evaluation_seed


def test_nudity_142_is_a_fixed_subset_of_the_shipped_i2p():
    def rows(path):
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    i2p = {r["case_number"]: r for r in rows(prompt_set_path("i2p"))}
    subset = rows(prompt_set_path("i2p-nudity-142"))
    assert len({r["case_number"] for r in subset}) == 142
    for r in subset:
        same = i2p[r["case_number"]]
        assert {k: v for k, v in r.items() if k != "Unnamed: 0"} == {k: v for k, v in same.items() if k != ""}
    # Not a rule on I2P's own columns: some rows have no nudity percentage at all.
    assert any(float(r["nudity_percentage"]) == 0.0 for r in subset)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEGEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_mma_diffusion_copy_read_by_reference(tmp_path, cache):
    src = tmp_path / "mma.csv"
    src.write_text("target_prompt,adv_prompt,clean_prompt\na naked couple,xq couple nxd,a couple\nb,,b\n")
    path = resolve_prompt_file(f"mma-diffusion:{src}")
    rows = read_prompts(path).rows
    assert [(r.id, r.prompt, r.seed, r.meta) for r in rows] == [("0", "xq couple nxd", None, {"categories": "sexual"})]
    target = read_prompts(resolve_prompt_file(f"mma-diffusion-target:{src}")).rows
    assert [r.prompt for r in target] == ["a naked couple", "b"]
    # The same copy gives the same file; a changed copy a new one.
    assert resolve_prompt_file(f"mma-diffusion:{src}") == path
    src.write_text("adv_prompt\nsomething else\n")
    assert resolve_prompt_file(f"mma-diffusion:{src}") != path

    jsonl = tmp_path / "mma.jsonl"
    jsonl.write_text(json.dumps({"adv_prompt": "from json", "target_prompt": "t"}) + "\n")
    assert [r.prompt for r in read_prompts(resolve_prompt_file(f"mma-diffusion:{jsonl}")).rows] == ["from json"]


def test_p4d_and_ring_a_bell_copies_keep_their_ids_and_seeds(tmp_path, cache):
    p4d = tmp_path / "p4d.csv"
    p4d.write_text(
        ",prompt,categories,evaluation_seed,evaluation_guidance,case_number,nudity_toxicity\n"
        "0,optimised prompt one,sexual,1664501552,7,20,0.83\n"
    )
    (row,) = read_prompts(resolve_prompt_file(f"p4d:{p4d}")).rows
    assert (row.id, row.prompt, row.seed) == ("20", "optimised prompt one", 1664501552)
    assert row.meta["categories"] == "sexual"
    rab = tmp_path / "rab.csv"
    rab.write_text("prompt,case_number,evaluation_seed\nsome tokens,3,41\n")
    (row,) = read_prompts(resolve_prompt_file(f"ring-a-bell-nudity:{rab}")).rows
    assert (row.id, row.seed) == ("3", 41)
    txt = tmp_path / "rab.txt"
    txt.write_text("one\ntwo\n")
    assert resolve_prompt_file(f"ring-a-bell-nudity:{txt}") == txt


def test_bad_references_fail_in_one_line(tmp_path, cache):
    with pytest.raises(UsageError, match="no such file; get mma-diffusion from huggingface.co/datasets/YijunYang280"):
        convert_external("mma-diffusion", tmp_path / "missing.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("prompt\nhello\n")
    with pytest.raises(PromptFileError, match="no 'adv_prompt' column, so not mma-diffusion's layout"):
        resolve_prompt_file(f"mma-diffusion:{wrong}")
    with pytest.raises(UsageError, match="nor a shipped prompt set .*, nor NAME:PATH with NAME one of mma-diffusion"):
        resolve_prompt_file("nudity-142")
