"""Issue 11's probes, tried as a hostile user would, so none of them comes back (inference side).

Each test is one probe from the issue: edit-then-resume, concurrent writers, a kill during
`retrieve add`, files that would be overwritten, exit codes of bad options given before any
model loads, and every input that used to end in a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from helpers import BrightClassifier
from typer.testing import CliRunner

from safegen.cli.main import app
from safegen.core.errors import SafegenError
from safegen.core.locking import lock_folder
from safegen.jobs import BatchConfig, read_manifest, run_batch
from safegen.safety import register_classifier

runner = CliRunner()
FAST = dict(steps=2, width=32, height=32, device="cpu")


@pytest.fixture(autouse=True)
def _own_fingerprint_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEGEN_CACHE", str(tmp_path / "fp-cache"))


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cli(*args: str):
    return runner.invoke(app, list(args))


# ----------------------------------------------------------------------------- edit, then resume


def test_txt_line_inserted_at_the_top_generates_only_the_new_row(tmp_path, tiny_safe_pipe):
    from safegen.jobs import txt_row_id

    src = tmp_path / "p.txt"
    src.write_text("a cat\na dog\na cat\n")  # a repeated line is a row of its own
    out = tmp_path / "o"
    assert run_batch(BatchConfig(prompts=src, out=out, **FAST), pipe=tiny_safe_pipe).generated == 3
    src.write_text("a red car\na cat\na dog\na cat\n")  # ids are the text's hash: no row moved
    res = run_batch(BatchConfig(prompts=src, out=out, **FAST), pipe=tiny_safe_pipe)
    assert (res.skipped, res.changed, res.changed_rows, res.generated) == (3, 0, 0, 1)
    records = {r["id"]: r for r in read_manifest(out)}
    cat, dog, car = txt_row_id("a cat"), txt_row_id("a dog"), txt_row_id("a red car")
    assert {k: (v["prompt"], v["line"]) for k, v in records.items()} == {
        cat: ("a cat", 1),  # the line numbers of the run that made them
        dog: ("a dog", 2),
        f"{cat}-2": ("a cat", 3),
        car: ("a red car", 1),
    }
    assert (out / "images" / f"{car}_s0.png").is_file()
    src.write_text("a red car\na cat\na wolf\na cat\n")  # an edited line: that row alone is new
    res = run_batch(BatchConfig(prompts=src, out=out, **FAST), pipe=tiny_safe_pipe)
    assert (res.skipped, res.generated) == (3, 1)
    assert "row(s) changed" not in (out / "errors.log").read_text()


def test_edited_prompt_and_steps_rerun_only_those_rows(tmp_path, tiny_safe_pipe):
    rows = [{"id": "a", "prompt": "a cat"}, {"id": "b", "prompt": "a dog"}, {"id": "c", "prompt": "a car"}]
    src = _jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "o"
    run_batch(BatchConfig(prompts=src, out=out, **FAST), pipe=tiny_safe_pipe)
    rows[1]["prompt"] = "a wolf"
    rows[2]["steps"] = 3
    _jsonl(src, rows)
    res = run_batch(BatchConfig(prompts=src, out=out, **FAST), pipe=tiny_safe_pipe)
    assert (res.skipped, res.changed, res.generated) == (1, 2, 2)
    log = (out / "errors.log").read_text()
    assert "id 'b' seed 0: changed (prompt)" in log and "id 'c' seed 0: changed (steps)" in log
    latest = {r["id"]: r for r in read_manifest(out)}
    assert latest["b"]["prompt"] == "a wolf" and latest["c"]["steps"] == 3
    # the manifest keeps the key of what made each image; run.json and runs.jsonl the fingerprints
    assert all(len(r["content_key"]) == 64 and r["base_fingerprint"] for r in latest.values())
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert (
        len(runs) == 2
        and runs[1]["changed"] == 2
        and runs[1]["fingerprints"]["base"] == runs[0]["fingerprints"]["base"]
    )
    assert json.loads((out / "run.json").read_text())["fingerprints"]["base"] == runs[1]["fingerprints"]["base"]


def test_other_prompt_file_with_the_same_ids_is_refused_with_on_change_refuse(tmp_path, tiny_safe_pipe):
    out = tmp_path / "o"
    first = _jsonl(tmp_path / "one.jsonl", [{"id": "x", "prompt": "a cat"}])
    other = _jsonl(tmp_path / "two.jsonl", [{"id": "x", "prompt": "a tank"}])
    run_batch(BatchConfig(prompts=first, out=out, **FAST), pipe=tiny_safe_pipe)
    manifest = (out / "manifest.jsonl").read_bytes()
    with pytest.raises(SafegenError, match=r"1 row\(s\) changed since the last run .*\(prompt; first: .*two.jsonl:1"):
        run_batch(BatchConfig(prompts=other, out=out, on_change="refuse", **FAST), pipe=tiny_safe_pipe)
    assert (out / "manifest.jsonl").read_bytes() == manifest
    res = run_batch(BatchConfig(prompts=other, out=out, **FAST), pipe=tiny_safe_pipe)
    assert (res.skipped, res.changed) == (0, 1)


def test_retrained_safe_encoder_in_the_same_folder_regenerates(tmp_path, tiny_sd_dir):
    from safegen.testing import tiny_clip_model

    encoder = tmp_path / "safe_clip"
    tiny_clip_model(seed=5).save_pretrained(encoder)
    src = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "a cat"}, {"id": "b", "prompt": "a dog"}])
    cfg = dict(prompts=src, out=tmp_path / "o", model=str(tiny_sd_dir), safe_encoder=str(encoder), **FAST)
    first = run_batch(BatchConfig(**cfg))
    assert first.generated == 2
    assert run_batch(BatchConfig(**cfg)).skipped == 2  # nothing changed: everything reused
    tiny_clip_model(seed=6).save_pretrained(encoder)  # "re-trained" into the same folder
    res = run_batch(BatchConfig(**cfg))
    assert (res.skipped, res.changed, res.generated) == (0, 2, 2)
    assert "safe encoder weights" in (tmp_path / "o" / "errors.log").read_text()


class _Bright(BrightClassifier):
    """The brightness judge under this file's own registry name."""

    name = "fi-bright"


register_classifier("fi-bright", _Bright)


def test_eval_rerun_after_a_prompt_edit_reports_like_a_fresh_folder(tmp_path, tiny_sd_dir):
    prompts = tmp_path / "p.csv"
    prompts.write_text('prompt,case_number,evaluation_seed\n"a red circle",0,1\n"a blue square",1,2\n')

    def evaluate(out: Path):
        args = ["eval", "t2i", "--prompts", str(prompts), "--model", str(tiny_sd_dir), "--methods", "original"]
        args += ["--classifier", "fi-bright", "--steps", "2", "--out", str(out), "--device", "cpu", "--json"]
        return runner.invoke(app, args)

    assert evaluate(tmp_path / "a").exit_code == 0
    prompts.write_text('prompt,case_number,evaluation_seed\n"a red circle",0,1\n"a white wall",1,2\n')
    resumed = evaluate(tmp_path / "a")
    fresh = evaluate(tmp_path / "b")
    assert resumed.exit_code == fresh.exit_code == 0, resumed.output
    said = " ".join(resumed.stderr.split())
    assert "reused 1 image(s)" in said and "1 changed since and regenerated" in said
    a, b = json.loads(resumed.stdout)["methods"]["original"], json.loads(fresh.stdout)["methods"]["original"]
    assert a["n_images"] == b["n_images"] == 2
    assert a["unsafe_rate"] == b["unsafe_rate"] and a["mean_score"] == b["mean_score"]
    assert a["reused_images"] == 1 and b["reused_images"] == 0


# ----------------------------------------------------------------------------- concurrent writers


def test_second_batch_on_one_out_is_refused_naming_the_holder(tmp_path):
    src = tmp_path / "p.txt"
    src.write_text("a cat\n")
    out = tmp_path / "o"
    with lock_folder(out, purpose="batch output folder"):
        res = _cli("batch", str(src), "--out", str(out), "--model", "nobody/none", "--device", "cpu")
    assert res.exit_code == 1
    assert f"is in use by pid {os.getpid()} on host" in res.stderr and "Traceback" not in res.output


def test_second_retrieve_add_is_refused_and_a_kill_keeps_saved_chunks(tmp_path, clip_dir, monkeypatch):
    from PIL import Image

    from safegen.retrieval.retriever import RetrievalIndex, SafeRetriever

    images = []
    for i in range(6):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(path)
        images.append(path)
    index = tmp_path / "index"
    retriever = SafeRetriever.from_pretrained(clip_dir, device="cpu", batch_size=2)
    retriever.add_images(images[:1])
    retriever.save(index)
    with lock_folder(index, purpose="retrieval index"):
        res = _cli("retrieve", "add", str(index), str(tmp_path / "imgs"), "--device", "cpu")
    assert res.exit_code == 1 and f"retrieval index {index} is in use by pid {os.getpid()}" in res.stderr

    # killed after the second chunk: what was saved survives
    encode, calls = retriever._encode, []

    def dies_on_third_batch(batch, kind):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode(batch, kind)

    monkeypatch.setattr(retriever, "_encode", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        retriever.add_images(images, on_chunk=lambda: retriever.save(index), chunk_size=2)
    assert len(RetrievalIndex.load(index)) == 5  # the first item plus two saved chunks of two


def test_changed_image_is_reencoded_and_new_weights_refused(tmp_path, clip_dir):
    from PIL import Image

    from safegen.retrieval.retriever import RetrievalIndex, SafeRetriever
    from safegen.testing import tiny_clip_model

    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32), "red").save(img)
    clip = tmp_path / "clip"
    shutil.copytree(clip_dir, clip)
    r = SafeRetriever.from_pretrained(clip, device="cpu")
    r.add_images([img])
    r.save(tmp_path / "idx")
    before = RetrievalIndex.load(tmp_path / "idx").embeddings.clone()
    Image.new("RGB", (32, 32), "blue").save(img)
    r = SafeRetriever.from_pretrained(clip, index=tmp_path / "idx", device="cpu")
    report = r.add_images([img])
    assert (report.added, report.changed, report.skipped) == (1, 1, 0)
    r.save(tmp_path / "idx")
    after = RetrievalIndex.load(tmp_path / "idx")
    assert len(after) == 1 and not bool((after.embeddings == before).all())
    tiny_clip_model(seed=9).save_pretrained(clip)  # re-trained into the same folder
    with pytest.raises(SafegenError, match="re-trained or replaced since"):
        SafeRetriever.from_pretrained(clip, index=tmp_path / "idx", device="cpu")


# ----------------------------------------------------------------------------- files never lost


def test_t2i_never_overwrites(tmp_path, tiny_sd_dir):
    base = ["t2i", "テスト" * 20, "--model", str(tiny_sd_dir), "--seed", "3", "--steps", "2", "--size", "32x32"]
    base += ["--out", str(tmp_path), "--device", "cpu", "--json"]
    first = json.loads(_cli(*base).stdout)[0]["file"]
    content = Path(first).read_bytes()
    second = json.loads(_cli(*base, "--guidance", "3").stdout)[0]["file"]  # same seed and stem, other guidance
    third = json.loads(_cli(*base).stdout)[0]["file"]  # identical request: a free name, not the same file
    assert len({first, second, third}) == 3
    assert Path(first).read_bytes() == content
    assert Path(third).name.endswith("-2.png")


def test_files_follow_the_umask(tmp_path):
    from safegen.core.io import atomic_write_text, write_new_file

    old = os.umask(0o022)
    try:
        mode = stat.S_IMODE(atomic_write_text(tmp_path / "a.json", "{}").stat().st_mode)
        os.umask(0o077)
        private = stat.S_IMODE(write_new_file(tmp_path, "b", ".txt", b"x").stat().st_mode)
    finally:
        os.umask(old)
    assert (mode, private) == (0o644, 0o600)
    with pytest.raises(FileExistsError):
        from safegen.core.io import atomic_write_bytes

        atomic_write_bytes(tmp_path / "a.json", b"no", overwrite=False)
    assert (tmp_path / "a.json").read_text() == "{}"


def test_failed_batch_leaves_no_empty_folder(tmp_path):
    src = tmp_path / "p.txt"
    src.write_text("a cat\n")
    out = tmp_path / "new" / "run"
    res = _cli("batch", str(src), "--out", str(out), "--model", str(tmp_path / "no-model"), "--device", "cpu")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- options checked before any work


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--threshold", "nan", "--check", "toy"], "--threshold must be a finite number"),
        (["--seed", str(2**70)], "--seed must be -1"),
        (["--device", "bogus"], "--device 'bogus' is not a device"),
        (["--attention", "bogus"], "--attention 'bogus' is unknown"),
        (["--guidance", "nan"], "--guidance"),
        (["--guidance", "inf"], "--guidance must be a finite number"),
        (["--steps", "1000000"], "--steps must be between 1 and 10000"),
        (["-n", "100000"], "--num-images must be between 1 and 10000"),
        (["--on-change", "maybe"], "--on-change"),
    ],
)
def test_batch_bad_options_exit_2_before_loading(tmp_path, args, needle):
    src = tmp_path / "p.txt"
    src.write_text("a cat\n")
    res = _cli("batch", str(src), "--out", str(tmp_path / "o"), "--model", "nobody/none", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seed", str(2**70)], "--seed must be -1"),
        (["--device", "bogus"], "--device 'bogus' is not a device"),
        (["--attention", "bogus"], "--attention 'bogus' is unknown"),
        (["--guidance", "-1"], "--guidance must be a finite number"),
        (["--guidance", "nan"], "--guidance must be a finite number"),
        (["-n", "1000"], "--num-images must be between 1 and 64"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_t2i_bad_options_exit_2_before_loading(tmp_path, args, needle):
    res = _cli("t2i", "a cat", "--model", "nobody/none", "--out", str(tmp_path / "o"), *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_out_pointing_at_a_file_fails_before_any_work(tmp_path):
    victim = tmp_path / "keep.png"
    victim.write_bytes(b"user data")
    src = tmp_path / "p.txt"
    src.write_text("a cat\n")
    commands = [
        ["t2i", "a cat", "--model", "nobody/none", "--out", str(victim)],
        ["batch", str(src), "--model", "nobody/none", "--out", str(victim)],
        ["i2t", str(victim), "--model", "nobody/none", "-o", str(victim)],
        ["retrieve", "build", str(victim), str(victim), "--model", "nobody/none"],
        ["eval", "t2i", "--prompts", str(src), "--model", "nobody/none", "--out", str(victim)],
    ]
    for args in commands:
        res = _cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert "is a file" in res.output and "Traceback" not in res.output
        assert victim.read_bytes() == b"user data"


def test_eval_bad_compare_to_fails_before_the_run(tmp_path):
    src = tmp_path / "p.txt"
    src.write_text("a cat\n")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = _cli("eval", "t2i", "--prompts", str(src), "--model", "nobody/none", "--compare-to", str(bad))
    assert res.exit_code == 2 and "--compare-to" in res.output and "not a readable report.json" in res.output


# ----------------------------------------------------------------------------- one line, never a traceback


def test_markup_in_prompts_and_paths_is_plain_text(tmp_path, tiny_sd_dir):
    model = tmp_path / "dir" / "[" / "x]" / "sd"  # the path `dir/[/x]/sd`
    shutil.copytree(tiny_sd_dir, model)
    res = _cli(
        "t2i", "[/bold] a [red]cat", "--model", str(model), "--steps", "2", "--size", "32x32",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "MarkupError" not in res.output
    from safegen.cli._common import console, status

    with status(console(), "loading dir/[/x]/sd"):
        pass


def test_lines_split_only_on_newlines(tmp_path):
    from safegen.jobs import read_prompts

    txt = tmp_path / "p.txt"
    txt.write_text("one\u2028still one\x0cand\u0085this\r\ntwo\n", encoding="utf-8")
    assert [r.prompt for r in read_prompts(txt).rows] == ["one\u2028still one\x0cand\u0085this", "two"]
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "a\u2028b\u0085c"}, ensure_ascii=False) + "\n", encoding="utf-8")
    pf = read_prompts(jl)
    assert [r.prompt for r in pf.rows] == ["a\u2028b\u0085c"] and not pf.errors


def test_deep_and_huge_json_values_are_bad_rows_and_the_run_goes_on(tmp_path, tiny_safe_pipe):
    src = tmp_path / "p.jsonl"
    src.write_text(
        '{"prompt": "deep", "m": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
        '{"prompt": "huge", "seed": ' + "9" * 5000 + "}\n"
        '{"prompt": "nested", "m": ' + "[" * 40 + "]" * 40 + "}\n"
        '{"prompt": "fine", "id": "ok"}\n'
    )
    res = run_batch(BatchConfig(prompts=src, out=tmp_path / "o", **FAST), pipe=tiny_safe_pipe)
    assert (res.generated, res.bad_rows) == (1, 3)
    log = (tmp_path / "o" / "errors.log").read_text()
    assert "p.jsonl:1: JSON nested too deeply" in log and "p.jsonl:2: unreadable JSON value" in log


def test_corrupt_run_json_warns_and_the_run_goes_on(tmp_path, tiny_safe_pipe):
    src = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "a cat"}, {"id": "b", "prompt": "a dog"}])
    out = tmp_path / "o"
    run_batch(BatchConfig(prompts=src, out=out, **FAST), pipe=tiny_safe_pipe)
    (out / "run.json").write_text('{"config": ' + "[" * 5000)
    res = _cli("batch", "--summary", str(out))
    assert res.exit_code == 1 and "run.json is unreadable" in res.stderr and "Traceback" not in res.output
    again = run_batch(BatchConfig(prompts=src, out=out, **FAST), pipe=tiny_safe_pipe)
    assert (again.skipped, again.generated) == (2, 0)  # the manifest keys still prove the images
    assert json.loads((out / "run.json").read_text())["config"]["prompts"] == str(src.resolve())


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.update(items=5),
        lambda m: m.update(generation="abc"),
        lambda m: m.update(embeddings_files=[{"file": "../../etc/passwd", "rows": 1}]),
        lambda m: m["items"][0].update(kind="video"),
        lambda m: m.update(count=-1),
    ],
)
def test_hand_edited_index_json_is_one_line(tmp_path, damage):
    import torch

    from safegen.retrieval.retriever import RetrievalIndex

    index = RetrievalIndex(model="m")
    index.add(torch.randn(2, 4), [{"id": "a", "kind": "image"}, {"id": "b", "kind": "text"}])
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    damage(meta)
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    res = _cli("retrieve", "info", str(tmp_path / "idx"))
    assert res.exit_code == 1 and res.stderr.startswith("error: ") and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_damaged_weights_in_a_model_folder_are_one_line(tmp_path, tiny_clip_dir):
    import pickle

    import torch
    from safetensors.torch import load_file, save_file

    from safegen.models.encoders import load_safe_text_encoder

    folders = {}
    for kind in ("garbage", "empty", "shape", "pickle"):
        folders[kind] = tmp_path / kind
        shutil.copytree(tiny_clip_dir, folders[kind])
    (folders["garbage"] / "model.safetensors").write_bytes(os.urandom(1000))
    (folders["empty"] / "model.safetensors").write_bytes(b"")
    weights = load_file(str(tiny_clip_dir / "model.safetensors"))
    key = next(k for k in weights if "token_embedding" in k)
    weights[key] = torch.zeros(3, 3)
    save_file(weights, str(folders["shape"] / "model.safetensors"), metadata={"format": "pt"})
    (folders["pickle"] / "model.safetensors").unlink()
    (folders["pickle"] / "pytorch_model.bin").write_bytes(pickle.dumps({"a": 1}))
    expected = {
        "garbage": "a .safetensors file in it is damaged",
        "empty": "a .safetensors file in it is damaged",
        "shape": "damaged or mismatched weights",
        "pickle": "safegen never runs code from pickles",
    }
    for kind, folder in folders.items():
        with pytest.raises(SafegenError, match=expected[kind]) as info:
            load_safe_text_encoder(str(folder))
        assert str(folder) in str(info.value) and "\n" not in str(info.value)


def test_symlink_loop_does_not_hang_i2t_expansion(tmp_path):
    from PIL import Image

    from safegen.data.image_io import expand_image_args

    (tmp_path / "loop" / "a").mkdir(parents=True)
    (tmp_path / "loop" / "a" / "up").symlink_to(tmp_path / "loop", target_is_directory=True)
    (tmp_path / "loop" / "a" / "self").symlink_to(tmp_path / "loop" / "a", target_is_directory=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "loop" / "a" / "x.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "loop" / "top.png")
    got = expand_image_args([str(tmp_path / "loop" / "**" / "*.png")])
    assert sorted(p.name for p in got.paths) == ["top.png", "x.png"]
    got = expand_image_args([str(tmp_path / "loop")], recursive=True)
    assert sorted(p.name for p in got.paths) == ["top.png", "x.png"]


def test_long_prompt_is_not_echoed_whole(tmp_path, tiny_sd_dir):
    prompt = "red " * 250_000  # 1 MB (10 MB behaves the same, only slower to tokenize)
    res = _cli("t2i", prompt, "--model", str(tiny_sd_dir), "--steps", "1", "--size", "32x32", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output[-500:]
    assert "longer than the text encoder reads" in res.stderr and len(res.stderr) < 5000
    assert len(res.stdout) < 1000


def test_failed_i2t_load_leaves_no_output_folder(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    out = tmp_path / "caps" / "run"
    res = _cli(
        "i2t", str(tmp_path / "a.png"), "--model", str(tmp_path / "no-model"), "-o", str(out), "--device", "cpu"
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert not (tmp_path / "caps").exists()


def test_prompt_overflow_reads_a_head_yet_cuts_exactly_like_the_whole_prompt():
    """A huge prompt is measured on a head of it; the cut part equals what tokenizing it all gives."""
    from safegen.pipelines.loading import prompt_overflow
    from safegen.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    prompt = " ".join(f"red{i % 7} circle" for i in range(3000))
    ids = tok(prompt, truncation=False).input_ids
    kept = tok.decode(ids[1 : tok.model_max_length - 1], skip_special_tokens=True)
    assert prompt_overflow(tok, prompt) == " ".join(prompt.split()[len(kept.split()) :])
    assert prompt_overflow(tok, "a red circle") is None
    long_word = "x" * (tok.model_max_length * 40)  # a head of one long token run: falls back to the whole text
    assert prompt_overflow(tok, long_word) is not None
