"""`safegen presets`: the named presets and whether each can run offline here."""

from __future__ import annotations

import dataclasses

import typer

from safegen.cli._common import cli_errors, print_json
from safegen.cli.options import JsonOpt


@cli_errors
def presets(json_out: JsonOpt = False) -> None:
    """List presets: base model, safe encoder, and whether all their weights are available offline."""
    from safegen.models.presets import is_available_offline, list_presets

    rows = []
    for preset in list_presets():
        p = preset.resolved()
        sources = p.sources()
        missing = [role for role, src in sources.items() if not is_available_offline(src)]
        entry = dataclasses.asdict(p)
        entry["covers"] = list(p.covers)
        entry["available_offline"] = not missing
        entry["missing"] = {role: sources[role] for role in missing}
        rows.append(entry)
    if json_out:
        print_json(rows)
        return

    # Plain aligned text: readable in a terminal and easy to grep in scripts.
    header = ("NAME", "TASK", "BASE", "SAFE ENCODER", "OFFLINE")
    lines = [header]
    for row, preset in zip(rows, list_presets(), strict=True):
        # The short '@assets/...' form: absolute paths would make the table unreadable.
        offline = "yes" if row["available_offline"] else "no (missing: " + ", ".join(row["missing"]) + ")"
        lines.append((preset.name, preset.task, preset.base, preset.safe_encoder or "-", offline))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1])
