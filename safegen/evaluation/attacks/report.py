"""Files of an attack evaluation: report.json (the contract), report.md and a success-rate plot."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from safegen.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from safegen.evaluation.report import _num, _pct

_logger = logging.getLogger(__name__)


def markdown_attack_report(report: dict[str, Any]) -> str:
    """Success rate per attack and method, then example adversarial prompts."""
    lines = ["# safegen eval attack", ""]
    cfg = report.get("config", {})
    lines += ["| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in cfg.items() if not isinstance(v, (dict, list)) and v is not None]
    lines += [f"| budgets | {json.dumps(cfg.get('budgets', {}))} |", ""]
    if report.get("classifier"):
        lines += [
            f"Classifier: `{report['classifier'].get('name')}` (threshold {report['classifier'].get('threshold')})"
        ]
        lines.append("")
    lines += [
        "| attack | constraint | method | prompts | successes | success rate | 95% CI | queries/prompt | "
        "queries/success | s/success | words/prompt | opt steps/prompt |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for attack, a in report.get("attacks", {}).items():
        # Reports written before attacks named their constraint were all under the banned words.
        constraint = a.get("constraint", "no-banned-words")
        for method, m in a["methods"].items():
            if m.get("unavailable"):
                lines.append(
                    f"| {attack} | {constraint} | {method} | - | - | unavailable: {m['unavailable']} | | | | | | |"
                )
                continue
            lo, hi = m["ci95"]
            lines.append(
                f"| {attack} | {constraint} | {method} | {m['n_prompts']} | {m['n_success']} | "
                f"{_pct(m['attack_success_rate'])} | "
                f"{_pct(lo)}-{_pct(hi)} | {_num(m['queries_mean'], '{:.0f}')} | "
                f"{_num(m['queries_per_success'], '{:.0f}')} | {_num(m['search_seconds_per_success'], '{:.2f}')} | "
                f"{_num(m['mean_prompt_words'], '{:.1f}')} | {_num(m.get('opt_steps_mean'), '{:.0f}')} |"
            )
    lines += ["", "## Example adversarial prompts", ""]
    for attack, a in report.get("attacks", {}).items():
        for method, m in a["methods"].items():
            for ex in m.get("examples", []):
                mark = "success" if ex["success"] else "failed"
                lines.append(f"- {attack} vs {method} ({mark}): `{ex['adversarial']}` (from `{ex['original']}`)")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def write_attack_report(out: str | Path, report: dict[str, Any]) -> dict[str, Path]:
    """Write report.json, report.md and attack_success.png (when matplotlib is installed)."""
    out = Path(out)
    paths = {
        "json": atomic_write_json(out / "report.json", report),
        "md": atomic_write_text(out / "report.md", markdown_attack_report(report)),
    }
    try:
        paths["plot"] = _plot(out, report)
    except ImportError:
        _logger.warning("matplotlib is not installed: no plots (pip install 'safegen[eval]')")
    return paths


def _plot(out: Path, report: dict[str, Any]) -> Path:
    import matplotlib  # the eval extra: without it the report has no plot (see write_attack_report)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(report.get("attacks", {}))
    methods = sorted({m for a in report["attacks"].values() for m, v in a["methods"].items() if "n_prompts" in v})
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(attacks) * max(1, len(methods)) / 2), 4))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        vals, errs = [], [[], []]
        for attack in attacks:
            m = report["attacks"][attack]["methods"].get(method, {})
            rate = m.get("attack_success_rate")
            lo, hi = m.get("ci95", [rate, rate]) if rate is not None else (0, 0)
            vals.append(100 * (rate or 0))
            errs[0].append(100 * max(0.0, (rate or 0) - (lo or 0)))
            errs[1].append(100 * max(0.0, (hi or 0) - (rate or 0)))
        ax.bar([j + i * width for j in range(len(attacks))], vals, width, yerr=errs, capsize=3, label=method)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(attacks))], attacks)
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(out / "attack_success.png", buf.getvalue())
