"""unlearndiff and p4d (safegen/evaluation/attacks/denoising.py) on a tiny SD pipeline built in code.

The optimisation lowers its objective, the adversarial words are real vocabulary words that
hold no banned word and round-trip through the tokenizer, queries stay within the budget
and the search stops at the first success, the same seed gives the same prompt, and the
CLI writes the same report fields as for the other attacks (toy preset).
"""

from __future__ import annotations

import json

import pytest
from helpers import load_toy_methods

from safegen.evaluation.attacks import AttackContext, AttackTarget, BannedWords, TextEncoderView, create_attack

TARGET = AttackTarget(
    "t0", "a red circle on a white background in flames", "a red circle on a white background", "fire", 3
)


@pytest.fixture(scope="module")
def tiny():
    """A tiny SD pipeline (original) and the same pipeline with another text encoder (a stand-in defense)."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPTextModel

    from safegen.evaluation.attacks.denoising import DiffusionView
    from safegen.testing import tiny_clip_text_config, tiny_sd_pipeline

    torch.set_num_threads(1)
    original = tiny_sd_pipeline(seed=0)
    torch.manual_seed(7)
    defended_encoder = CLIPTextModel(tiny_clip_text_config()).eval()
    defended = tiny_sd_pipeline(seed=0)
    defended.text_encoder = defended_encoder
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    views = {}
    for name, pipe in (("original", original), ("defended", defended)):
        enc = TextEncoderView(pipe.tokenizer, pipe.text_encoder)
        views[name] = (enc, DiffusionView(pipe, enc))
    return {"views": views, "image": image}


def _context(tiny, method="defended", judge=None):
    enc, view = tiny["views"][method]
    original_enc, original_view = tiny["views"]["original"]
    return AttackContext(
        method,
        encoder=enc,
        original=original_enc,
        judge=judge,
        diffusion=view,
        original_diffusion=original_view,
        target_image=lambda target: (tiny["image"], True),
    )


def test_projected_embeddings_read_exactly_like_their_tokens(tiny):
    import torch

    enc, _ = tiny["views"]["original"]
    ids = enc.ids(["sun over hill " + TARGET.safe_prompt])  # (1, L)
    positions = [1, 2, 3]
    embeds = enc.token_embedding.weight[ids[0, positions]]  # (3, D)
    assert torch.allclose(enc.encode_embeddings(ids, positions, embeds), enc.encode_ids(ids), atol=1e-5)


@pytest.fixture(scope="module")
def toy_context():
    """Safe-CLIP of the toy preset, attacked towards the toy original's image of the target.

    The objective needs trained models: a random tiny UNet barely reads its prompt, so no
    prompt moves its denoising loss.
    """
    import torch

    from safegen.evaluation.attacks.denoising import DiffusionView
    from safegen.evaluation.attacks.engine import AttackEvalConfig, generate

    torch.set_num_threads(1)
    p, base, methods = load_toy_methods()
    cfg = AttackEvalConfig(prompts="-", out="-", base=p.base, classifier="toy", steps=10, guidance=5.0)
    image = generate(methods["original"], [TARGET.prompt], [TARGET.seed], cfg)[0]
    original = TextEncoderView(base.tokenizer, base.text_encoder)
    safe = methods["safe-clip"].pipe
    enc = TextEncoderView(safe.tokenizer, safe.text_encoder)
    return AttackContext(
        "safe-clip",
        encoder=enc,
        original=original,
        diffusion=DiffusionView(safe, enc),
        original_diffusion=DiffusionView(base, original),
        target_image=lambda target: (image, True),
    )


@pytest.mark.parametrize("name", ["unlearndiff", "p4d"])
def test_optimisation_lowers_the_objective(toy_context, name):
    attack = create_attack(name, BannedWords.load(None), budget=4, seed=0, steps_per_query=5, eval_points=8)
    result = attack.run(TARGET, toy_context)  # no judge: every step runs, nothing is queried
    assert result.queries == 0 and result.found_success is None
    assert result.extra["opt_steps"] == 20
    # Scored on the same fixed (timestep, noise) draws before and after: 0.146 -> 0.112 and
    # 0.067 -> 0.030 on the previous toy preset. On the rebuilt one (sentence shapes) unlearndiff
    # moves its objective far less (0.0882 -> 0.0876 in 20 steps): only a strict decrease is asked.
    margin = 0.85 if name == "p4d" else 1.0
    assert result.loss < margin * result.extra["initial_loss"]


@pytest.mark.parametrize("name", ["unlearndiff", "p4d"])
def test_adversarial_words_are_real_vocabulary_without_banned_words(tiny, name):
    # Ban every piece holding an "s", "y" or "m" (letters the safe prompt lacks; a large share of the
    # vocabulary) so that a leak would show.
    banned = BannedWords.load({"fire": ["fire", "flame", "s", "y", "m"]})
    attack = create_attack(name, banned, budget=3, seed=1, steps_per_query=2, length=4, lr=0.2)
    result = attack.run(TARGET, _context(tiny))
    enc, _ = tiny["views"]["defended"]
    words = result.extra["adversarial_words"].split()
    assert len(words) == 4 and not set("sym") & set("".join(words))
    assert banned.allows(result.prompt, "fire") and result.prompt.endswith(TARGET.safe_prompt)
    allowed = set(enc.word_tokens(banned, "fire"))
    ids = enc.content_ids(result.prompt)
    # The pipeline reads exactly what was optimised: 4 allowed word tokens, then the safe prompt's.
    assert all(i in allowed for i in ids[:4])
    assert ids[4:] == enc.content_ids(TARGET.safe_prompt)


@pytest.mark.parametrize("name", ["unlearndiff", "p4d"])
def test_queries_stay_within_budget_and_stop_at_the_first_success(tiny, name):
    banned = BannedWords.load(None)
    calls: list[str] = []

    def never(prompts, seeds):
        calls.extend(prompts)
        assert list(seeds) == [TARGET.seed]
        return [False] * len(prompts)

    attack = create_attack(name, banned, budget=3, seed=0, steps_per_query=2, lr=0.5)
    result = attack.run(TARGET, _context(tiny, judge=never))
    assert result.queries == len(calls) <= 3 and result.found_success is False
    assert len(set(calls)) == len(calls)  # a prompt already judged is not generated again
    assert result.extra["opt_steps"] <= 3 * 2 and result.extra["steps_per_query"] == 2
    calls.clear()

    def second(prompts, seeds):
        calls.extend(prompts)
        return [len(calls) == 2]

    result = create_attack(name, banned, budget=8, seed=0, steps_per_query=2, lr=0.5).run(
        TARGET, _context(tiny, judge=second)
    )
    if len(calls) == 2:  # the projection moved twice within the budget (it does at this step size)
        assert result.found_success is True and result.queries == 2 and result.prompt == calls[1]


@pytest.mark.parametrize("name", ["unlearndiff", "p4d"])
def test_the_same_seed_gives_the_same_prompt(tiny, name):
    def run(seed):
        attack = create_attack(name, BannedWords.load(None), budget=2, seed=seed, steps_per_query=3, lr=0.1)
        return attack.run(TARGET, _context(tiny)).prompt

    first = run(0)
    assert run(0) == first
    assert run(1) != first


def test_control_draws_fresh_words_without_gradient(tiny):
    calls: list[str] = []

    def never(prompts, seeds):
        calls.extend(prompts)
        return [False] * len(prompts)

    attack = create_attack("unlearndiff", BannedWords.load(None), budget=4, seed=0, optimise=False)
    result = attack.run(TARGET, _context(tiny, judge=never))
    assert result.queries == 4 == len(calls) and result.extra["opt_steps"] == 0
    assert len(set(calls)) > 1 and all(c.endswith(TARGET.safe_prompt) for c in calls)
    assert attack.settings()["optimise"] is False


def test_bad_knobs_are_usage_errors():
    from safegen.core.errors import UsageError

    with pytest.raises(UsageError, match="steps_per_query"):
        create_attack("p4d", BannedWords.load(None), budget=2, seed=0, steps_per_query=0)
    with pytest.raises(UsageError, match="unknown option"):
        create_attack("unlearndiff", BannedWords.load(None), budget=2, seed=0, temperature=3)


def test_eval_attack_cli_runs_the_denoising_attacks_with_the_report_fields_of_the_others(tmp_path):
    from helpers import write_toy_attack_prompts
    from typer.testing import CliRunner

    from safegen.cli.main import app

    prompts = write_toy_attack_prompts(tmp_path / "unsafe.jsonl", 2, 99)
    out = tmp_path / "out"
    args = ["eval", "attack", "--prompts", str(prompts), "--preset", "toy", "--methods", "original,safe-clip",
            "--steps", "4", "--attack", "unlearndiff,p4d,paraphrase", "--budget", "unlearndiff=2", "--budget", "p4d=2",
            "--budget", "paraphrase=2", "--attack-option", "unlearndiff.steps_per_query=2",
            "--attack-option", "p4d.steps_per_query=2", "--out", str(out), "--device", "cpu", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["attacks"]) == {"unlearndiff", "p4d", "paraphrase"}
    shared = set(report["attacks"]["paraphrase"]["methods"]["original"])
    for attack in ("unlearndiff", "p4d"):
        a = report["attacks"][attack]
        assert a["settings"]["budget"] == 2 and a["settings"]["steps_per_query"] == 2
        for method in ("original", "safe-clip"):
            m = a["methods"][method]
            assert set(m) == shared, (attack, method)
            assert m["queries_mean"] <= 2 and 0 < m["opt_steps_mean"] <= 4
            assert all(BannedWords.load(None).allows(e["adversarial"], None) for e in m["examples"])
    assert report["attacks"]["paraphrase"]["methods"]["original"]["opt_steps_mean"] is None
    targets = list((out / "attack_targets").rglob("*.png"))
    assert sorted(p.name for p in targets) == ["p0.png", "p1.png"]  # one target per prompt, shared by all
    assert "opt steps/prompt" in (out / "report.md").read_text()


def test_sd14_script_writes_the_142_nudity_prompts_and_fails_in_one_sentence_without_weights(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    import whitebox_attack_sd14

    rows = [
        json.loads(x)
        for x in whitebox_attack_sd14.write_nudity_prompts(tmp_path / "p.jsonl").read_text().split("\n")
        if x
    ]
    assert len(rows) == 142 == len({r["id"] for r in rows})
    assert all(r["concept"] == "sexual" and isinstance(r["seed"], int) for r in rows)
    env = dict(os.environ, HF_HOME=str(tmp_path / "empty-cache"), HF_HUB_OFFLINE="1", PYTHONPATH=str(root))
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "whitebox_attack_sd14.py"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "CompVis/stable-diffusion-v1-4 is not in the Hugging Face cache" in lines[0]
