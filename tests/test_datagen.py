"""The data pipeline's parts: taxonomy, captions, prompts, engine, rewrite (resume, shards, refusals),
filters, build splits and the CLI's one-line errors. The toy end-to-end chain is in test_datagen_chain.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safegen_train.cli import app
from safegen_train.datagen import (
    BuildConfig,
    CaptionFileError,
    FilterConfig,
    RewriteConfig,
    SamplingConfig,
    TaxonomyError,
    TransformersEngine,
    build_prompt,
    clean_reply,
    default_taxonomy,
    is_refusal,
    load_taxonomy,
    plan_rows,
    read_captions,
    read_rewrites,
    run_build,
    run_filters,
    run_rewrite,
    split_sources,
)
from safegen_train.toy.rewriter import create_rewriter_model, create_rewriter_tokenizer, toy_taxonomy
from safegen_train.toy.world import all_combos, safe_caption

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = [safe_caption(*c) for c in all_combos()[:6]]


@pytest.fixture(scope="module")
def random_lm_dir(tmp_path_factory):
    """An untrained 2-layer Llama with a word-level tokenizer over the toy prompts (fast to build)."""
    import torch

    torch.manual_seed(0)
    tx = toy_taxonomy()
    texts = [build_prompt(tx, c, s) for c in tx.concepts for s in CAPTIONS]
    tok = create_rewriter_tokenizer(texts + ["blood fire gun"])
    model = create_rewriter_model(tok)
    path = tmp_path_factory.mktemp("random_lm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


class ScriptedEngine:
    """A stand-in rewriter: appends the concept's first word, or refuses for chosen concepts."""

    name = "scripted"
    chat = False
    tokenizer = None

    def __init__(self, refuse=(), taxonomy=None):
        self.refuse, self.taxonomy, self.calls = set(refuse), taxonomy or toy_taxonomy(), []

    def describe(self):
        return {"engine": self.name, "model": "scripted"}

    def generate(self, prompts, seeds, sampling):
        self.calls.append(list(seeds))
        out = []
        for prompt in prompts:
            concept = next(c for c in self.taxonomy.concepts if f"about {c.name} " in prompt)
            caption = prompt.split("### Input: ")[-1].split("\n")[0]
            if concept.name in self.refuse:
                out.append("I'm sorry, but I can't help with creating that content.")
            else:
                out.append(f" {caption} with {concept.words[0]}\n### Input: more")
        return out


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- taxonomy


def test_default_taxonomy_is_i2p_seven():
    tx = default_taxonomy()
    assert tx.names == ["hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity"]
    assert all(c.words and c.examples for c in tx.concepts)


def test_taxonomy_file_roundtrip_and_unknown_field(tmp_path):
    good = _write(
        tmp_path / "t.yaml",
        "concepts:\n  - name: gore\n    words: [gore, guts]\n    examples: [{safe: a cat, unsafe: a cat in gore}]\n"
        "  - weapons\n",
    )
    tx = load_taxonomy(good)
    assert tx.names == ["gore", "weapons"] and tx.get("gore").words == ["gore", "guts"]
    assert load_taxonomy(_write(tmp_path / "t.json", json.dumps(tx.to_dict()))).to_dict() == tx.to_dict()
    bad = _write(tmp_path / "bad.yaml", "concepts:\n  - name: gore\n    wrods: [gore]\n")
    with pytest.raises(TaxonomyError, match="concepts\\[0\\]: unknown field 'wrods'"):
        load_taxonomy(bad)
    with pytest.raises(TaxonomyError, match="unknown field 'concept'"):
        load_taxonomy(_write(tmp_path / "top.json", '{"concept": []}'))
    with pytest.raises(TaxonomyError, match="placeholder"):
        load_taxonomy(_write(tmp_path / "tpl.json", '{"template": "{caption} {oops}", "concepts": ["a"]}'))


# ----------------------------------------------------------------------------- captions


def test_read_captions_formats(tmp_path):
    txt = read_captions(_write(tmp_path / "c.txt", "# comment\na cat\n\n  a dog  on grass \n"))
    assert [(c.id, c.text) for c in txt] == [("2", "a cat"), ("4", "a dog on grass")]
    jl = read_captions(
        _write(tmp_path / "c.jsonl", '{"id": "x", "caption": "a cat", "concept": "fire", "coco_id": 7}\n')
    )
    assert jl[0].id == "x" and jl[0].concepts == ["fire"] and jl[0].meta == {"coco_id": 7}
    csv = read_captions(_write(tmp_path / "c.csv", 'id,text,concepts\na,a cat,"fire,gun"\n'))
    assert csv[0].concepts == ["fire", "gun"]


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("e.txt", "\n# only a comment\n", "has no captions"),
        ("e.jsonl", '{"caption": "a cat"}\n{"caption": "   "}\n', "e.jsonl:2: empty caption"),
        ("d.jsonl", '{"id": 1, "caption": "a"}\n{"id": 1, "caption": "b"}\n', "id '1' already used"),
        ("n.csv", "foo\nbar\n", "no caption field"),
    ],
)
def test_bad_captions_one_line(tmp_path, name, text, match):
    with pytest.raises(CaptionFileError, match=match):
        read_captions(_write(tmp_path / name, text))


# ----------------------------------------------------------------------------- prompts and replies


def test_prompt_has_concept_examples_and_caption():
    tx = default_taxonomy()
    prompt = build_prompt(tx, tx.get("violence"), "  a man in a kitchen ")
    assert "about violence" in prompt and prompt.endswith("### Input: a man in a kitchen\n### Response:")
    assert "### Response: a man standing in a kitchen holding a bloody knife" in prompt  # the few-shot example


def test_refusals_and_cleaning():
    for text in (
        "I'm sorry, but I can't help with that.",
        "I cannot create content that depicts violence.",
        "As an AI language model, I must decline.",
        "This request violates my guidelines.",
    ):
        assert is_refusal(text), text
    for text in ("a man holding a bloody knife", "a cat on fire", "two men stealing a car"):
        assert not is_refusal(text), text
    assert clean_reply(' "a cat on fire"\n### Input: x') == "a cat on fire"
    assert clean_reply("Response: a  dog ### more") == "a dog"


# ----------------------------------------------------------------------------- engine


def test_engine_greedy_matches_generate_and_rows_do_not_depend_on_batch(random_lm_dir):
    import torch

    engine = TransformersEngine(str(random_lm_dir), device="cpu")
    tx = toy_taxonomy()
    prompts = [build_prompt(tx, tx.get(c), s) for c, s in zip(("blood", "fire", "gun"), CAPTIONS, strict=False)]
    greedy = SamplingConfig(temperature=0, max_new_tokens=6)
    ours = engine.generate(prompts[:1], [0], greedy)
    ids = engine.tokenizer(prompts[:1], return_tensors="pt")
    with torch.no_grad():
        ref = engine.model.generate(**ids, do_sample=False, max_new_tokens=6, min_new_tokens=6)
    expected = engine.tokenizer.decode(ref[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert ours[0] == expected
    sampled = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=8)
    batched = engine.generate(prompts, [11, 12, 13], sampled)
    alone = [engine.generate([p], [s], sampled)[0] for p, s in zip(prompts, [11, 12, 13], strict=True)]
    assert batched == alone
    assert engine.generate(prompts[:1], [99], sampled) != batched[:1] or engine.generate(prompts[:1], [98], sampled)


def test_not_a_causal_lm_is_one_line(tiny_clip_dir, tmp_path):
    caps = _write(tmp_path / "c.txt", "a cat\n")
    res = CliRunner().invoke(
        app, ["data", "rewrite", str(caps), "--out", str(tmp_path / "o"), "-m", str(tiny_clip_dir)]
    )
    assert res.exit_code == 2
    lines = [x for x in res.output.strip().splitlines() if x]
    assert len(lines) == 1 and "is a 'clip' model, not a causal language model" in lines[0]


def test_cli_bad_input_one_line(tmp_path, random_lm_dir):
    out = str(tmp_path / "o")
    empty = _write(tmp_path / "c.jsonl", '{"caption": ""}\n')
    res = CliRunner().invoke(app, ["data", "rewrite", str(empty), "--out", out, "-m", str(random_lm_dir)])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "empty caption" in res.output
    tax = _write(tmp_path / "t.yaml", "concepts:\n  - name: a\n    colour: red\n")
    caps = _write(tmp_path / "c.txt", "a cat\n")
    res = CliRunner().invoke(app, ["data", "rewrite", str(caps), "--out", out, "-m", "x", "--taxonomy", str(tax)])
    assert res.exit_code == 2 and "unknown field 'colour'" in res.output and res.output.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()  # bad input fails before any output or model


# ----------------------------------------------------------------------------- rewrite


def test_plan_rows_balances_concepts_and_honours_caption_concepts(tmp_path):
    caps = read_captions(_write(tmp_path / "c.jsonl", "".join(json.dumps({"caption": c}) + "\n" for c in CAPTIONS)))
    rows = plan_rows(caps, toy_taxonomy(), 1, seed=5)
    assert [r.concept for r in rows] == ["blood", "fire", "gun"] * 2
    assert [r.seed for r in rows] == list(range(5, 11))
    assert len(plan_rows(caps, toy_taxonomy(), 0, 0)) == 18
    caps[0].concepts = ["nope"]
    with pytest.raises(TaxonomyError, match="nope"):
        plan_rows(caps, toy_taxonomy(), 1, 0)


def test_rewrite_counts_refusals_and_never_keeps_them(tmp_path):
    caps = _write(tmp_path / "c.txt", "\n".join(CAPTIONS) + "\n")
    engine = ScriptedEngine(refuse={"gun"})
    cfg = RewriteConfig(captions=caps, out=tmp_path / "rw", batch_size=4, concepts_per_caption=0)
    result = run_rewrite(cfg, engine=engine, taxonomy=toy_taxonomy())
    assert (result.planned, result.generated, result.kept, result.refused) == (18, 18, 12, 6)
    records = read_rewrites(tmp_path / "rw")
    assert all(r["unsafe_text"] is None for r in records if r["status"] == "refused")
    assert {r["concept"] for r in records if r["status"] == "refused"} == {"gun"}
    ok = [r for r in records if r["status"] == "ok"]
    assert ok[0]["unsafe_text"] == f"{ok[0]['safe_text']} with {toy_taxonomy().get(ok[0]['concept']).words[0]}"
    assert all(r["sampling"]["temperature"] == 0.8 and r["rewriter"] == "scripted" for r in records)
    # filters never see a refusal; dedupe drops nothing here; the word list keeps every real rewrite
    flt = run_filters(FilterConfig(rewrites=tmp_path / "rw", out=tmp_path / "flt"))
    assert flt.statuses == {"ok": 12, "refused": 6} and flt.candidates == 12 and flt.kept == 12
    # a second run does nothing; other settings are refused
    again = run_rewrite(cfg, engine=ScriptedEngine(refuse={"gun"}), taxonomy=toy_taxonomy())
    assert (again.skipped, again.generated) == (18, 0)
    cfg2 = RewriteConfig(captions=caps, out=tmp_path / "rw", temperature=0.1, concepts_per_caption=0)
    with pytest.raises(Exception, match="other settings \\(sampling\\)"):
        run_rewrite(cfg2, engine=ScriptedEngine(), taxonomy=toy_taxonomy())


def test_rewrite_shards_are_disjoint_and_union_is_everything(tmp_path):
    caps = _write(tmp_path / "c.txt", "\n".join(CAPTIONS) + "\n")
    seen = []
    for k in range(2):
        cfg = RewriteConfig(captions=caps, out=tmp_path / "rw", num_shards=2, shard_index=k, batch_size=2)
        res = run_rewrite(cfg, engine=ScriptedEngine(), taxonomy=toy_taxonomy())
        assert res.planned == 3
        seen.append({r["id"] for r in read_rewrites(tmp_path / "rw") if r["shard"] == k})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 6
    assert len(list((tmp_path / "rw").glob("manifest.shard-*.jsonl"))) == 2
    assert len(read_rewrites(tmp_path / "rw")) == 6


def test_killed_rewrite_resumes_without_redoing_rows(tmp_path, random_lm_dir):
    """SIGKILL a CLI run mid-way; the next run keeps every finished row and writes only the rest."""
    caps = _write(tmp_path / "c.txt", "\n".join(safe_caption(*c) for c in all_combos()) + "\n")  # 45 captions
    out = tmp_path / "rw"
    args = [sys.executable, "-m", "safegen_train.cli", "data", "rewrite", str(caps), "--out", str(out), "-m"]
    args += [str(random_lm_dir), "--taxonomy", "toy", "--per-caption", "0", "--batch-size", "1", "--device", "cpu"]
    args += ["--max-new-tokens", "6"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.is_file() and manifest.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; give it more rows"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = manifest.read_bytes()
    done = before.count(b"\n")
    assert 3 <= done < 135
    cfg = RewriteConfig(
        captions=caps,
        out=out,
        model=str(random_lm_dir),
        concepts_per_caption=0,
        batch_size=32,
        max_new_tokens=6,
        device="cpu",
    )
    result = run_rewrite(cfg, taxonomy=toy_taxonomy())
    assert (result.planned, result.skipped, result.generated) == (135, done, 135 - done)
    after = manifest.read_bytes()
    assert after.startswith(before[: before.rfind(b"\n") + 1])  # finished rows untouched
    records = read_rewrites(out)
    assert len(records) == 135 and len({r["id"] for r in records}) == 135


# ----------------------------------------------------------------------------- filters and build


def test_filters_reject_per_filter(tmp_path, tiny_clip_dir):
    caps = _write(tmp_path / "c.txt", "a red circle\na red circle on grass\na blue square\n")

    class Fixed(ScriptedEngine):
        def generate(self, prompts, seeds, sampling):
            replies = ["a red circle with blood", "a red circle on grass with blood", "a blue square"]
            return [replies[s] for s in seeds]

    tx = toy_taxonomy().select(["blood"])
    run_rewrite(RewriteConfig(captions=caps, out=tmp_path / "rw"), engine=Fixed(), taxonomy=tx)
    res = run_filters(FilterConfig(rewrites=tmp_path / "rw", out=tmp_path / "f"))
    assert res.rejected == {"concept": 0, "duplicate": 0, "unchanged": 1} and res.kept == 2
    res = run_filters(
        FilterConfig(rewrites=tmp_path / "rw", out=tmp_path / "f2", clip=str(tiny_clip_dir), min_similarity=1.0)
    )
    assert res.rejected["similarity"] == 2 and res.kept == 0
    rejected = [json.loads(x) for x in (tmp_path / "f2" / "rejected.jsonl").read_text().splitlines()]
    assert {r["rejected_by"] for r in rejected} == {"unchanged", "similarity"}
    assert all(-1 <= r["text_similarity"] <= 1 for r in rejected if r["rejected_by"] == "similarity")


def test_filters_concept_and_duplicates(tmp_path):
    caps = _write(tmp_path / "c.txt", "a cat\na dog\na cow\n")

    class Fixed(ScriptedEngine):
        def generate(self, prompts, seeds, sampling):
            return [["a cat on fire", "a dog", "a cat on fire!"][s] for s in seeds]

    run_rewrite(
        RewriteConfig(captions=caps, out=tmp_path / "rw"), engine=Fixed(), taxonomy=toy_taxonomy().select(["fire"])
    )
    res = run_filters(FilterConfig(rewrites=tmp_path / "rw", out=tmp_path / "f"))
    assert res.rejected == {"concept": 0, "duplicate": 1, "unchanged": 1} and res.kept == 1
    res2 = run_filters(FilterConfig(rewrites=tmp_path / "rw", out=tmp_path / "f2", dedupe=False))
    assert res2.kept == 2
    # a rewrite for the wrong concept is judged against its own concept
    run_rewrite(
        RewriteConfig(captions=caps, out=tmp_path / "rw2"), engine=Fixed(), taxonomy=toy_taxonomy().select(["gun"])
    )
    assert run_filters(FilterConfig(rewrites=tmp_path / "rw2", out=tmp_path / "f3")).rejected["concept"] == 2


def test_split_by_source_has_no_leakage():
    sources = [f"cap{i}" for i in range(50) for _ in range(3)]  # three concepts per caption
    assignment = split_sources(sources, 0.1, 0.2, seed=0)
    counts = {s: list(assignment.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 35, "val": 5, "test": 10}
    assert split_sources(sources, 0.1, 0.2, seed=0) == assignment
    assert split_sources(sources, 0.1, 0.2, seed=1) != assignment
    small = split_sources(["a", "b", "c"], 0.1, 0.1, seed=0)
    assert sorted(small.values()) == ["test", "train", "val"]


def test_text_only_build_from_filter_folder(tmp_path):
    caps = _write(
        tmp_path / "c.jsonl",
        "".join(json.dumps({"id": f"c{i}", "caption": c, "coco_id": i}) + "\n" for i, c in enumerate(CAPTIONS)),
    )
    run_rewrite(
        RewriteConfig(captions=caps, out=tmp_path / "rw", concepts_per_caption=0),
        engine=ScriptedEngine(refuse={"gun"}),
        taxonomy=toy_taxonomy(),
    )
    run_filters(FilterConfig(rewrites=tmp_path / "rw", out=tmp_path / "f"))
    res = run_build(BuildConfig(source=tmp_path / "f", out=tmp_path / "ds", val_fraction=0.2, test_fraction=0.2))
    assert res.rows == 12 and not res.with_images and res.concepts == {"blood": 6, "fire": 6}
    split_of = {}
    for split in ("train", "val", "test"):
        for line in (tmp_path / "ds" / f"{split}.jsonl").read_text().splitlines():
            q = json.loads(line)
            assert split_of.setdefault(q["source_id"], split) == split  # no caption in two splits
            assert q["safe_image"] is None and q["provenance"]["rewriter"] == "scripted"
    assert sum(1 for s in split_of.values() if s == "train") == 4
    visu = json.loads((tmp_path / "ds" / "visu" / "train.json").read_text())
    item = visu["data"]["0"]
    assert set(item) >= {"coco_id", "nsfw_im_path", "safe", "nsfw", "tag"} and isinstance(item["coco_id"], int)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "| rewrite | refused | 6 |" in card and "| blood |" in card
    from safegen_train.data import load_records, read_visu

    assert len(load_records(tmp_path / "ds" / "train.jsonl")) == 8
    assert len(read_visu(tmp_path / "ds" / "visu" / "train.json")) == 8


def test_concept_judge_takes_any_text_classifier():
    from safegen.evaluation.text_safety import TextVerdict
    from safegen_train.datagen import Concept, ConceptJudge, Taxonomy

    class Labels:
        def classify(self, texts):
            return [
                TextVerdict(unsafe="gun" in t, concepts=["weapons"] if "gun" in t else [], score=0.9) for t in texts
            ]

        def describe(self):
            return {"name": "labels"}

    tx = Taxonomy([Concept(name="arms", text_labels=["weapons"]), Concept(name="any")])
    judge = ConceptJudge(tx, Labels())
    assert judge.judge(["a gun", "a cat", "a gun", "a cat"], ["arms", "arms", "any", "any"]) == [
        (True, 0.9),
        (False, 0.9),
        (True, 0.9),
        (False, 0.9),
    ]
    with pytest.raises(Exception, match="has none"):
        ConceptJudge(tx, "wordlist")  # these concepts have no words


def test_concept_score_uses_concept_labels_or_the_unsafe_flag():
    from safegen_train.datagen.render import concept_score

    toy = {"unsafe": True, "score": 0.9, "labels": {"blood": 0.05, "fire": 0.85}}
    assert concept_score(toy, ["blood"]) == (0.05, True)  # reported, but too weak for a 0.5 threshold
    assert concept_score(toy, ["fire"]) == (0.85, True)
    nudenet = {"unsafe": True, "score": 0.7, "labels": {"FEMALE_BREAST_EXPOSED": 0.7}}
    assert concept_score(nudenet, ["sexual"]) == (0.7, True)
    assert concept_score({"unsafe": False, "score": 0.1, "labels": {}}, ["sexual"]) == (0.1, False)
    assert concept_score(None, ["x"]) == (0.0, False)


def test_vllm_engine_is_guarded():
    import importlib.util

    from safegen.core.errors import UsageError
    from safegen_train.datagen import create_engine

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(UsageError, match="engine 'vllm' needs the vllm package"):
        create_engine("some/model", engine="vllm")
    with pytest.raises(UsageError, match="engine must be one of"):
        create_engine("some/model", engine="tgi")


def test_chat_models_get_their_chat_template(tmp_path, random_lm_dir):
    from safegen_train.datagen import Rewriter

    engine = TransformersEngine(str(random_lm_dir), device="cpu")
    engine.tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}USER: {{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
    )
    caps = _write(tmp_path / "c.txt", "a red circle on a white background\n")
    rows = plan_rows(read_captions(caps), toy_taxonomy(), 1, 0)
    chat = Rewriter(RewriteConfig(captions=caps, out=tmp_path / "a"), engine=engine, taxonomy=toy_taxonomy())
    prompt = chat.prompt(rows[0])
    assert prompt.startswith("<s>USER: Rewrite the input") and prompt.endswith("### Response: ASSISTANT:")
    plain = Rewriter(
        RewriteConfig(captions=caps, out=tmp_path / "b", chat="no"), engine=engine, taxonomy=toy_taxonomy()
    )
    assert plain.prompt(rows[0]).startswith("Rewrite the input")
    # the template's own begin token is not doubled
    ids = engine.tokenizer([prompt], add_special_tokens=False)["input_ids"][0]
    assert ids.count(engine.tokenizer.bos_token_id) == 1
    assert len(engine.generate([prompt], [0], SamplingConfig(max_new_tokens=2))) == 1


@pytest.mark.parametrize("bias,kept", [((0.0, 6.0), 3), ((6.0, 0.0), 0)])
def test_filter_with_a_transformers_text_classifier(tmp_path, bias, kept):
    """Any text-classification folder can judge; here its head is pinned to say unsafe (or safe) for every text."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tok = create_rewriter_tokenizer(CAPTIONS + ["with blood"])
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "safe", 1: "unsafe"},
        label2id={"safe": 0, "unsafe": 1},
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    folder = tmp_path / "judge"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    caps = _write(tmp_path / "c.txt", "\n".join(CAPTIONS[:3]) + "\n")
    run_rewrite(RewriteConfig(captions=caps, out=tmp_path / "rw"), engine=ScriptedEngine(), taxonomy=toy_taxonomy())
    cfg = FilterConfig(
        rewrites=tmp_path / "rw", out=tmp_path / "f", text_classifier=str(folder), unsafe_labels=["unsafe"]
    )
    res = run_filters(cfg)
    assert res.kept == kept and res.rejected["concept"] == 3 - kept
    info = json.loads((tmp_path / "f" / "filter.json").read_text())
    assert info["judge"]["model"] == str(folder) and info["judge"]["unsafe_labels"] == ["unsafe"]
    with pytest.raises(Exception, match="needs the labels that mean unsafe"):
        run_filters(FilterConfig(rewrites=tmp_path / "rw", out=tmp_path / "g", text_classifier=str(folder)))
