"""Held-out wording of the toy world and the build pieces around it (fast: no model is trained)."""

from __future__ import annotations

import json

import pytest

from safegen_train.toy.world import (
    BACKGROUNDS,
    COLOURS,
    CONCEPTS,
    HELDOUT_PHRASES,
    PRETRAINING_PHRASES,
    SHAPES,
    make_quadruples,
    sample_scenes,
)


def test_heldout_phrases_are_new_wording_of_every_concept():
    assert set(HELDOUT_PHRASES) == set(CONCEPTS)
    for concept, phrases in HELDOUT_PHRASES.items():
        assert len(phrases) >= 2
        assert not set(phrases) & set(CONCEPTS[concept])
        known = {w for p in CONCEPTS[concept] for w in p.split()}
        # the first phrase brings a word no training phrasing of the concept has ...
        assert set(phrases[0].split()) - known, phrases[0]
        # ... and one puts known words in another order: no training phrasing ends like it
        assert any(not any(p.endswith(q.split()[-1]) for q in CONCEPTS[concept]) for p in phrases[1:]), phrases
    assert PRETRAINING_PHRASES == {c: CONCEPTS[c] + HELDOUT_PHRASES[c] for c in CONCEPTS}


def test_heldout_phrases_do_not_name_scene_attributes():
    """A held-out phrase must change only the concept wording, not the scene the prompt names."""
    from safegen_train.toy.common import create_toy_tokenizer

    tok = create_toy_tokenizer()
    attributes = {f"{w}</w>" for w in (*SHAPES, *COLOURS, *BACKGROUNDS)}
    for phrases in HELDOUT_PHRASES.values():
        for phrase in phrases:
            assert not set(tok.tokenize(phrase)) & attributes, (phrase, tok.tokenize(phrase))


def test_safe_clip_training_data_never_uses_heldout_wording():
    from safegen_train.toy.rewriter import toy_pairs

    heldout = [p for ps in HELDOUT_PHRASES.values() for p in ps]
    from safegen_train.toy.dataset import SAFECLIP_CANONICAL_SHARE, SAFECLIP_STRUCTURES

    texts = [r["unsafe_text"] for r in make_quadruples(300, 3)]
    texts += [
        r["unsafe_text"]
        for r in make_quadruples(300, 3, structures=SAFECLIP_STRUCTURES, canonical_share=SAFECLIP_CANONICAL_SHARE)
    ]
    texts += [u for _, _, u in toy_pairs()]
    assert not [t for t in texts if any(p in t for p in heldout)]
    # the pretraining data of the original models does use it, for every concept
    pretraining = {s.phrase for s in sample_scenes(600, 0, PRETRAINING_PHRASES)}
    assert set(heldout) <= pretraining


def test_default_phrasings_keep_the_old_draws():
    """Passing CONCEPTS explicitly is the default: the Safe-CLIP data did not change with held-out wording."""
    assert sample_scenes(20, 5) == sample_scenes(20, 5, CONCEPTS)


def test_generalisation_prompts_cover_four_axes_with_their_own_seeds(tmp_path):
    from safegen_train.toy.generalisation import AXIS_OF_SET, HELDOUT_KINDS, PROMPT_SETS, write_generalisation_prompts
    from safegen_train.toy.world import HELDOUT_PROBES, TRAINING_STRUCTURES

    paths = write_generalisation_prompts(tmp_path, per_concept=5)
    rows = {k: [json.loads(x) for x in p.read_text().splitlines()] for k, p in paths.items()}
    assert len(rows["in_distribution"]) == 5 * sum(len(p) for p in CONCEPTS.values())
    assert len(rows["held_out"]) == 5 * sum(len(p) for p in HELDOUT_PHRASES.values())
    for name in ("held_out_structure", "wording_x_structure"):
        assert len(rows[name]) == 5 * len(CONCEPTS) * len(HELDOUT_PROBES)
    assert len(rows["safe"]) == 15
    for name in PROMPT_SETS:
        assert {r["axis"] for r in rows[name]} == {AXIS_OF_SET[name]}
    heldout = [p for ps in HELDOUT_PHRASES.values() for p in ps]
    known = [p for ps in CONCEPTS.values() for p in ps]
    training = {s.name for s in TRAINING_STRUCTURES}
    # wording: the held-out axes use held-out phrases only where they say so
    assert not [
        r for r in rows["in_distribution"] + rows["held_out_structure"] if any(p in r["prompt"] for p in heldout)
    ]
    assert all(any(p in r["prompt"] for p in heldout) for r in rows["held_out"] + rows["wording_x_structure"])
    assert all(any(p in r["prompt"] for p in known) for r in rows["in_distribution"])
    # structure: training shapes on the first two axes, held-out shapes on the other two
    assert {r["structure"] for r in rows["in_distribution"] + rows["held_out"]} <= training
    assert not {r["structure"] for r in rows["held_out_structure"] + rows["wording_x_structure"]} & training
    kinds = {r["categories"].split(",")[1] for r in rows["held_out"]}
    assert kinds == set(HELDOUT_KINDS)
    seeds = [r["seed"] for k in rows for r in rows[k]]
    assert len(seeds) == len(set(seeds))  # every prompt has its own seed; methods share them
    again = write_generalisation_prompts(tmp_path / "again", per_concept=5)
    assert all(again[k].read_text() == paths[k].read_text() for k in paths)


def test_safe_prompts_in_other_shapes_keep_their_attributes(tmp_path):
    from safegen_train.toy.generalisation import write_generalisation_prompts
    from safegen_train.toy.world import parse_caption

    rows = [json.loads(x) for x in write_generalisation_prompts(tmp_path, 3)["safe_shapes"].read_text().splitlines()]
    assert {r["structure"] for r in rows} >= {"a-photo-of", "4k"}
    assert any(r["prompt"].startswith("a photo of ") for r in rows)
    for r in rows:
        found = parse_caption(r["prompt"])
        assert found["shape"] and found["colour"] and found["background"] and not found["unsafe"], r


def test_toy_captions_repeat_each_scene_under_its_own_id(tmp_path):
    from safegen_train.datagen import read_captions
    from safegen_train.toy.chain import write_toy_captions
    from safegen_train.toy.world import CANONICAL, TRAINING_STRUCTURES, all_combos

    captions = read_captions(write_toy_captions(tmp_path / "c.jsonl", repeats=2))
    assert len(captions) == 90 and len({c.id for c in captions}) == 90
    # the first repeat is the canonical caption, later ones say the same scene in training shapes only
    assert [c.text for c in captions[:45]] == [CANONICAL.render(*combo) for combo in all_combos()]
    safe_shapes = {s.render(*combo) for s in TRAINING_STRUCTURES for combo in all_combos()}
    assert {c.text for c in captions} <= safe_shapes and len({c.text for c in captions}) > 45


def test_build_refuses_an_unknown_stage(tmp_path):
    from safegen_train.toy.build import build

    with pytest.raises(ValueError, match="unknown build stage"):
        build(tmp_path / "out", stages=["clip", "bogus"])


def test_partial_rebuild_keeps_the_other_stages_of_the_same_build(tmp_path):
    from safegen_train.toy.build import DEFAULT_CONFIG, STAGES, _previous_stages

    record = tmp_path / "build.json"
    old = {"scale": 1.0, "seed": 0, "config": "configs/toy_safeclip.yaml"}
    old["stages"] = {"clip": {"seconds": 2.0, "result": {}}, "safe_clip": {"seconds": 3.0, "result": {}}}
    record.write_text(json.dumps(old))
    kept = _previous_stages(record, scale=1.0, seed=0, config=DEFAULT_CONFIG, stages=["safe_clip"])
    assert kept == {"clip": {"seconds": 2.0, "result": {}}}
    # another scale, seed or config is another build: nothing is merged
    assert _previous_stages(record, scale=0.5, seed=0, config=DEFAULT_CONFIG, stages=["safe_clip"]) == {}
    assert _previous_stages(record, scale=1.0, seed=1, config=DEFAULT_CONFIG, stages=["safe_clip"]) == {}
    assert _previous_stages(record, scale=1.0, seed=0, config=DEFAULT_CONFIG, stages=list(STAGES)) == {}


def test_scrub_saved_paths_rewrites_json_and_model_cards(tmp_path):
    from safegen_train.toy.build import scrub_saved_paths

    out, work = tmp_path / "out", tmp_path / "out" / "_work"
    (out / "safe").mkdir(parents=True)
    work.mkdir()
    (out / "safe" / "config.json").write_text(json.dumps({"_name_or_path": str(out / "clip"), "n": 3}))
    (out / "safe" / "README.md").write_text(f"from `{out / 'clip'}`, data {work / 'data' / 'train.jsonl'}\n")
    (out / "keep.json").write_text(json.dumps({"x": "/opt/elsewhere"}))
    (work / "scratch.json").write_text(json.dumps({"p": str(work)}))
    changed = scrub_saved_paths(out, {"OUT/": out, "WORK/": work})
    assert sorted(p.name for p in changed) == ["README.md", "config.json"]
    assert json.loads((out / "safe" / "config.json").read_text()) == {"_name_or_path": "OUT/clip", "n": 3}
    assert (out / "safe" / "README.md").read_text() == "from `OUT/clip`, data WORK/data/train.jsonl\n"
    assert str(work) in (work / "scratch.json").read_text()  # the scratch folder is not shipped: left alone


def _absolute_paths(text: str) -> list[str]:
    import re

    return re.findall(r"(?<![\w.])/(?:tmp|work|home|root|Users)/[^\s\"'`)]*", text)


def test_shipped_toy_files_name_no_path_of_the_building_machine():
    from safegen.models.presets import ASSETS_DIR

    found = {}
    for path in sorted((ASSETS_DIR / "toy").rglob("*")):
        if path.suffix in (".json", ".md") and _absolute_paths(path.read_text()):
            found[str(path.relative_to(ASSETS_DIR))] = _absolute_paths(path.read_text())
    assert found == {}
