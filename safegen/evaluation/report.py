"""Evaluation reports: report.json (the contract), report.md, plots and contact sheets.

``report.json`` holds, per method under ``methods``, at least ``unsafe_rate`` and
``n_images``; everything else (intervals, categories, quality, timing) is added beside
them. ``--compare-to`` reads an earlier report and prints the deltas.
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from safegen.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text

_logger = logging.getLogger(__name__)


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100.0 * x:.1f}%"


def _num(x: Any, fmt: str = "{:.3f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def _group_table(methods: dict[str, Any], key: str, title: str, *, rate: bool) -> list[str]:
    """A markdown table of one per-group figure (``methods[m][key][group]``), a column per group."""
    groups = sorted({g for m in methods.values() for g in (m.get(key) or {})})
    if not groups:
        return []
    lines = ["", f"## {title}", "", "| method | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for name, m in methods.items():
        by = m.get(key) or {}
        cells = [_pct(by.get(g, {}).get("unsafe_rate")) if rate else _pct(by.get(g)) for g in groups]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """Human-readable tables for report.md."""
    lines = [f"# safegen eval {report.get('kind', '')}", ""]
    cfg = report.get("config", {})
    if cfg:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in cfg.items() if not isinstance(v, (dict, list))]
        lines.append("")
    if report.get("classifier"):
        lines += [f"Classifier: `{json.dumps(report['classifier'], sort_keys=True)}`", ""]
    methods = report.get("methods", {})
    lines += [
        "| method | images | failed | unsafe | unsafe rate | 95% CI | mean score | quality | s/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        if m.get("unavailable"):
            lines.append(f"| {name} | - | - | - | unavailable: {m['unavailable']} | | | | |")
            continue
        lo, hi = (m.get("ci95") or [None, None])[:2]
        quality = ", ".join(f"{k} {_num(v, '{:.2f}')}" for k, v in (m.get("quality") or {}).items()) or "-"
        lines.append(
            f"| {name} | {m.get('n_images', 0)} | {m.get('n_failed', '-')} | {m.get('n_unsafe', '-')} | "
            f"{_pct(m.get('unsafe_rate'))} | "
            f"{_pct(lo)}-{_pct(hi)} | {_num(m.get('mean_score'))} | {quality} | "
            f"{_num(m.get('seconds_per_image'), '{:.4f}')} |"
        )
    lines += _judges_table(report)
    lines += _group_table(methods, "by_category", "Unsafe rate by category", rate=True)
    lines += _group_table(methods, "by_axis", "Unsafe rate by generalisation axis", rate=True)
    lines += _group_table(
        methods, "attribute_fidelity_by_structure", "Safe-prompt attribute fidelity by sentence shape", rate=False
    )
    for name, entry in (report.get("prompt_sets") or {}).items():
        if entry.get("truncated"):
            lines += [
                "",
                f"Long prompts ({name}): {entry['truncated']} of {entry['rows']} longer than the tokenizer's "
                f"{entry['tokenizer_max_tokens']} tokens, cut the same way for every method.",
            ]
    for key, title in (("excluded", "Excluded images"), ("excluded_quality", "Excluded quality images")):
        rows = report.get(key) or []
        if rows:
            lines += ["", f"## {title} ({len(rows)})", "", "| id | seed | method: reason |", "|---|---|---|"]
            for row in rows:
                why = "; ".join(f"{m}: {r}" for m, r in row["failed"].items()).replace("|", "/").replace("\n", " ")
                lines.append(f"| {row['id']} | {row['seed']} | {why} |")
    for extra in ("notes",):
        if report.get(extra):
            lines += ["", f"## {extra.title()}", ""] + [f"- {n}" for n in report[extra]]
    return "\n".join(lines) + "\n"


def _judges_table(report: dict[str, Any]) -> list[str]:
    """One column per judge (unsafe rate and 95% CI) when several judges scored the same images."""
    judges = list(report.get("judges") or {})
    if len(judges) < 2:
        return []
    lines = ["", "## Unsafe rate by judge (same images)", "", "| method | " + " | ".join(judges) + " |"]
    lines.append("|---|" + "---|" * len(judges))
    for name, m in report.get("methods", {}).items():
        if m.get("unavailable"):
            continue
        cells = []
        for judge in judges:
            j = (m.get("judges") or {}).get(judge) or {}
            lo, hi = (j.get("ci95") or [None, None])[:2]
            cells.append(f"{_pct(j.get('unsafe_rate'))} ({_pct(lo)}-{_pct(hi)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: str | Path, report: dict[str, Any]) -> dict[str, Path]:
    """Write report.json and report.md (atomically) and the plots; returns the paths written."""
    out = Path(out)
    paths = {
        "json": atomic_write_json(out / "report.json", report),
        "md": atomic_write_text(out / "report.md", markdown_report(report)),
    }
    try:
        paths.update(write_plots(out, report))
    except ImportError:
        _logger.warning("matplotlib is not installed: no plots (pip install 'safegen[eval]')")
    return paths


def write_plots(out: Path, report: dict[str, Any]) -> dict[str, Path]:
    """Unsafe rate by category and method; quality vs safety scatter (when quality was measured)."""
    import matplotlib  # the eval extra: without it the report has no plots (see write_report)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = {k: v for k, v in report.get("methods", {}).items() if not v.get("unavailable")}
    paths: dict[str, Path] = {}
    if not methods:
        return paths
    cats = sorted({c for m in methods.values() for c in (m.get("by_category") or {})}) or ["all"]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cats) * max(1, len(methods)) / 2), 4))
    width = 0.8 / len(methods)
    for i, (name, m) in enumerate(methods.items()):
        by = m.get("by_category") or {}
        vals = [100 * (by[c]["unsafe_rate"] if c in by else m["unsafe_rate"] if c == "all" else 0) for c in cats]
        ax.bar([j + i * width for j in range(len(cats))], vals, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cats))], cats, rotation=30, ha="right")
    ax.set_ylabel("unsafe rate (%)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    paths["by_category"] = atomic_write_bytes(out / "unsafe_rate_by_category.png", buf.getvalue())

    points = [(n, m["quality"]) for n, m in methods.items() if m.get("quality")]
    if points:
        metric = next(iter(points[0][1]))
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, q in points:
            if metric in q and q[metric] is not None:
                ax.scatter(q[metric], 100 * methods[name]["unsafe_rate"])
                ax.annotate(name, (q[metric], 100 * methods[name]["unsafe_rate"]), fontsize="small")
        ax.set_xlabel(metric)
        ax.set_ylabel("unsafe rate (%)")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        paths["quality_vs_safety"] = atomic_write_bytes(out / "quality_vs_safety.png", buf.getvalue())
    return paths


def contact_sheet(images: list[Any], flagged: list[bool], *, columns: int = 8, cell: int = 96) -> Any:
    """A grid of thumbnails; flagged images are blurred so the sheet is safe to share."""
    rows = max(1, math.ceil(len(images) / columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, (im, flag) in enumerate(zip(images, flagged, strict=True)):
        thumb = im.convert("RGB").resize((cell, cell))
        if flag:
            thumb = thumb.filter(ImageFilter.GaussianBlur(radius=cell / 8))
            ImageDraw.Draw(thumb).rectangle([0, 0, cell - 1, cell - 1], outline=(220, 0, 0), width=3)
        sheet.paste(thumb, ((i % columns) * cell, (i // columns) * cell))
    return sheet


def compare_reports(current: dict[str, Any], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """Per method present in both: unsafe-rate and quality deltas (current - previous)."""
    rows = []
    prev_methods = previous.get("methods", {})
    for name, m in current.get("methods", {}).items():
        p = prev_methods.get(name)
        if not p or m.get("unavailable") or p.get("unavailable"):
            continue
        row = {
            "method": name,
            "unsafe_rate": m["unsafe_rate"],
            "previous": p["unsafe_rate"],
            "delta": m["unsafe_rate"] - p["unsafe_rate"],
        }
        for metric, value in (m.get("quality") or {}).items():
            old = (p.get("quality") or {}).get(metric)
            if value is not None and old is not None:
                row[f"{metric}_delta"] = value - old
        rows.append(row)
    return rows


def format_comparison(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'method':<28} {'unsafe now':>10} {'before':>8} {'delta':>8}"]
    for r in rows:
        lines.append(
            f"{r['method']:<28} {_pct(r['unsafe_rate']):>10} {_pct(r['previous']):>8} {100 * r['delta']:+7.1f}pt"
        )
    return "\n".join(lines)
