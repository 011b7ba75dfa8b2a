"""Sentence shapes of the toy world, their held-out split, and the follow-token loss term (fast)."""

from __future__ import annotations

import pytest
import torch

from safegen_train.toy.world import (
    BACKGROUNDS,
    CANONICAL,
    COLOURS,
    CONCEPTS,
    HELDOUT_ORDERS,
    HELDOUT_PREFIXES,
    HELDOUT_PROBES,
    HELDOUT_STRUCTURES,
    HELDOUT_SUFFIXES,
    ORDERS,
    PREFIXES,
    PRETRAINING_PHRASES,
    PRETRAINING_STRUCTURES,
    SHAPES,
    SUFFIXES,
    TRAINING_ORDERS,
    TRAINING_PREFIXES,
    TRAINING_STRUCTURES,
    TRAINING_SUFFIXES,
    Structure,
    all_combos,
    make_pretraining_quadruples,
    make_quadruples,
    parse_caption,
    sample_scenes,
)

HELDOUT_MARKS = [p for p in HELDOUT_PREFIXES] + [s for s in HELDOUT_SUFFIXES]


def _is_heldout_text(text: str) -> bool:
    """Does a text use a held-out part? (prefix/suffix words, the concept first, or the 'and' connective)."""
    if any(m in text for m in HELDOUT_MARKS) or " and " in text:
        return True
    return not text.startswith(("a ", "an "))  # every training shape starts with its scene or prefix


def test_parts_split_into_training_and_heldout_without_overlap():
    for training, heldout, every in (
        (TRAINING_ORDERS, HELDOUT_ORDERS, tuple(ORDERS)),
        (TRAINING_PREFIXES, HELDOUT_PREFIXES, PREFIXES),
        (TRAINING_SUFFIXES, HELDOUT_SUFFIXES, SUFFIXES),
    ):
        assert not set(training) & set(heldout)
        assert set(training) | set(heldout) == set(every)
        assert heldout
    assert CANONICAL == TRAINING_STRUCTURES[0] and not CANONICAL.is_heldout
    assert not set(TRAINING_STRUCTURES) & set(HELDOUT_STRUCTURES)
    assert all(s.is_heldout for s in HELDOUT_STRUCTURES) and not any(s.is_heldout for s in TRAINING_STRUCTURES)
    assert set(PRETRAINING_STRUCTURES) == set(TRAINING_STRUCTURES) | set(HELDOUT_STRUCTURES)
    assert len(PRETRAINING_STRUCTURES) == len(ORDERS) * len(PREFIXES) * len(SUFFIXES)
    assert set(HELDOUT_PROBES.values()) <= set(HELDOUT_STRUCTURES)
    # the probes cover every held-out part at least once
    assert {s.order for s in HELDOUT_PROBES.values()} >= set(HELDOUT_ORDERS)
    assert {s.prefix for s in HELDOUT_PROBES.values()} >= set(HELDOUT_PREFIXES)
    assert {s.suffix for s in HELDOUT_PROBES.values()} >= set(HELDOUT_SUFFIXES)


def test_a_structure_renders_its_safe_twin_by_leaving_the_phrase_out():
    st = Structure("before", "a photo of", "4k")
    assert (
        st.render("circle", "red", "white", "in flames")
        == "in flames, a photo of a red circle on a white background, 4k"
    )
    assert st.render("circle", "red", "white") == "a photo of a red circle on a white background, 4k"
    inside = Structure("inside", "a drawing of")
    assert (
        inside.render("square", "blue", "gray", "with a gun")
        == "a drawing of a blue square with a gun on a gray background"
    )
    assert CANONICAL.render("square", "blue", "gray", "on fire") == "a blue square on a gray background on fire"
    with pytest.raises(ValueError, match="unknown order"):
        Structure("sideways")
    with pytest.raises(ValueError, match="unknown prefix"):
        Structure("after", "a movie still of")


def test_every_shape_keeps_its_scene_readable_and_fits_the_tokenizer():
    from safegen_train.toy.common import TOY_MAX_LENGTH, create_toy_tokenizer

    tok = create_toy_tokenizer()
    attributes = {f"{w}</w>" for w in (*SHAPES, *COLOURS, *BACKGROUNDS)}
    for part in (*PREFIXES, *SUFFIXES, *(o.replace("{", " ").replace("}", " ") for o in ORDERS.values())):
        words = [w for w in part.split() if w not in ("scene", "phrase", "lead", "colour", "shape", "background")]
        assert not set(tok.tokenize(" ".join(words))) & attributes, part
    longest = max(
        (
            st.render(s, c, b, p)
            for st in PRETRAINING_STRUCTURES
            for p in sum(PRETRAINING_PHRASES.values(), ())
            for s, c, b in [("triangle", "purple", "white")]
        ),
        key=lambda t: len(tok(t)["input_ids"]),
    )
    assert len(tok(longest)["input_ids"]) <= TOY_MAX_LENGTH, longest  # nothing is cut off
    for st in PRETRAINING_STRUCTURES:
        for concept, phrases in CONCEPTS.items():
            found = parse_caption(st.render("triangle", "green", "black", phrases[0]))
            assert (found["shape"], found["colour"], found["background"]) == ("triangle", "green", "black"), st
            assert found["unsafe"] == [concept]


def test_shapes_do_not_change_the_scenes_drawn():
    plain = sample_scenes(30, 7)
    shaped = sample_scenes(30, 7, structures=PRETRAINING_STRUCTURES)
    strip = [(s.shape, s.colour, s.background, s.concept, s.phrase, s.seed) for s in plain]
    assert strip == [(s.shape, s.colour, s.background, s.concept, s.phrase, s.seed) for s in shaped]
    assert {s.structure for s in plain} == {CANONICAL}
    assert len({s.structure for s in shaped}) > 10
    share = sample_scenes(400, 1, structures=TRAINING_STRUCTURES, canonical_share=1.0)
    assert {s.structure for s in share} == {CANONICAL}
    with pytest.raises(ValueError, match="canonical_share"):
        sample_scenes(2, 1, structures=TRAINING_STRUCTURES, canonical_share=1.5)


def test_training_text_never_uses_a_heldout_shape_and_pretraining_uses_them_all():
    from safegen_train.toy.chain import write_toy_captions
    from safegen_train.toy.dataset import SAFECLIP_CANONICAL_SHARE, SAFECLIP_STRUCTURES
    from safegen_train.toy.rewriter import toy_pairs

    records = make_quadruples(400, 3, structures=SAFECLIP_STRUCTURES, canonical_share=SAFECLIP_CANONICAL_SHARE)
    texts = [t for r in records for t in (r["safe_text"], r["unsafe_text"])]
    texts += [t for _, safe, unsafe in toy_pairs() for t in (safe, unsafe)]
    assert not [t for t in texts if _is_heldout_text(t)]
    assert len({r["structure"] for r in records}) == len(TRAINING_STRUCTURES)  # and every training shape is used
    assert not [t for t in texts if any(t.startswith(p) for ps in CONCEPTS.values() for p in ps)]

    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(write_toy_captions(Path(tmp) / "c.jsonl", repeats=4)).read_text().splitlines()
    assert not [r for r in rows if _is_heldout_text(json.loads(r)["caption"])]

    pretraining = make_pretraining_quadruples(3000, 0)
    used = {r["structure"] for r in pretraining}
    assert {s.name for s in HELDOUT_PROBES.values()} <= used
    assert sum(_is_heldout_text(r["unsafe_text"]) for r in pretraining) > 1000


def test_the_sentence_axes_are_disjoint_from_training_by_construction():
    training_texts = {
        st.render(*combo, p)
        for st in TRAINING_STRUCTURES
        for combo in all_combos()[:6]
        for ps in CONCEPTS.values()
        for p in ps
    }
    probe_texts = {
        st.render(*combo, p)
        for st in HELDOUT_PROBES.values()
        for combo in all_combos()[:6]
        for ps in CONCEPTS.values()
        for p in ps
    }
    assert not training_texts & probe_texts


# ----------------------------------------------------------------------------- the follow-token term


def _ids(tokenizer, texts, length=24):
    enc = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_suffix_alignment_pairs_the_tokens_after_the_phrase_with_the_safe_twin():
    from safegen_train.losses import suffix_alignment
    from safegen_train.toy.common import create_toy_tokenizer

    tok = create_toy_tokenizer()
    safe = "a red circle on a white background"
    unsafe = ["covered in blood, " + safe, safe + " covered in blood", safe]
    u_ids, u_mask = _ids(tok, unsafe)
    s_ids, s_mask = _ids(tok, [safe] * 3)
    index = suffix_alignment(u_ids, u_mask, s_ids, s_mask)  # (3, 24)
    n_safe = int(s_mask[0].sum())
    n_phrase = int(u_mask[0].sum()) - n_safe
    # phrase first: the whole scene follows it and is paired position by position (after the start token)
    assert index[0, : n_phrase + 1].tolist() == [-1] * (n_phrase + 1)
    assert index[0, n_phrase + 1 :].tolist() == list(range(1, 24 - n_phrase))
    assert bool((u_ids[0, n_phrase + 1 : n_phrase + n_safe] == s_ids[0, 1:n_safe]).all())
    # phrase last: only the end token and the padding follow it
    n_unsafe = int(u_mask[1].sum())
    assert (index[1] >= 0).nonzero().flatten().tolist() == list(range(n_unsafe - 1, 24))
    assert index[1, n_unsafe - 1].item() == n_safe - 1
    # the same text has nothing to redirect
    assert index[2].tolist() == [-1] * 24


def test_follow_term_is_zero_on_the_twin_states_and_trains_the_following_tokens():
    from safegen_train.config import LossConfig
    from safegen_train.losses import SafeCLIPLoss, suffix_alignment
    from safegen_train.toy.common import create_toy_tokenizer

    tok = create_toy_tokenizer()
    safe = "a red circle on a white background"
    u_ids, u_mask = _ids(tok, ["in flames, " + safe])
    s_ids, s_mask = _ids(tok, [safe])
    index = suffix_alignment(u_ids, u_mask, s_ids, s_mask)
    ref = torch.randn(1, 24, 16)
    twin = torch.gather(ref, 1, index.clamp_min(0)[..., None].expand(-1, -1, 16)).clone()
    twin[index < 0] = torch.randn(int((index < 0).sum()), 16)  # the phrase itself may be anything
    loss = SafeCLIPLoss(LossConfig(text_tokens_follow=1.0))
    kwargs = dict(ref_text_tokens=ref, safe_text_tokens=ref, follow_index=index)
    assert loss(unsafe_text_tokens=twin, **kwargs)["text_tokens_follow"].item() == pytest.approx(0.0, abs=1e-6)
    drifted = twin.clone().requires_grad_(True)
    with torch.no_grad():
        drifted[index >= 0] += torch.randn(int((index >= 0).sum()), 16)
    out = loss(unsafe_text_tokens=drifted, **kwargs)
    assert out["text_tokens_follow"].item() > 0.05
    out["loss"].backward()
    grad = drifted.grad.abs().sum(-1)[0]  # (24,)
    assert bool((grad[index[0] >= 0] > 0).all()) and bool((grad[index[0] < 0] == 0).all())
