"""Adversarial evaluation: does the safety hold against someone trying to break it?

One module per attack family, all but ``structure`` under the banned-word constraint of :mod:`.constraint`:

- :mod:`.paraphrase`: rule-based rewrites queried against the method (black box);
- :mod:`.ring_a_bell`: concept direction + genetic token search on the original encoder (transfer);
- :mod:`.adaptive`: greedy coordinate gradient search through each method's own text encoder (white box);
- :mod:`.denoising`: ``unlearndiff`` and ``p4d``, PEZ hard prompts optimised on the diffusion model's own
  denoising loss through each method's UNet and text encoder (white box);
- :mod:`.image_pgd`: an L-infinity bounded perturbation of images against a captioner's vision tower;
- :mod:`.structure`: the unsafe words KEPT, the sentence shape searched (black box; not under the constraint).

:func:`evaluate_attacks` runs them through the eval t2i engine (methods, batch runner,
classifier) and returns the report that :func:`write_attack_report` writes.
"""

from __future__ import annotations

from safegen.evaluation.attacks.base import Attack, AttackContext, AttackResult, AttackTarget, TextEncoderView
from safegen.evaluation.attacks.constraint import DEFAULT_BANNED, BannedWords
from safegen.evaluation.attacks.engine import (
    ATTACKS,
    DEFAULT_ATTACKS,
    DEFAULT_BUDGETS,
    AttackEvalConfig,
    create_attack,
    evaluate_attacks,
    read_targets,
)
from safegen.evaluation.attacks.report import markdown_attack_report, write_attack_report

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "DEFAULT_BANNED",
    "DEFAULT_BUDGETS",
    "Attack",
    "AttackContext",
    "AttackEvalConfig",
    "AttackResult",
    "AttackTarget",
    "BannedWords",
    "TextEncoderView",
    "create_attack",
    "evaluate_attacks",
    "markdown_attack_report",
    "read_targets",
    "write_attack_report",
]
