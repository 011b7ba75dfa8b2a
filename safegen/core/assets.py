"""Where the files safegen ships live (toy preset weights, prompt sets, Q16 prompts)."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
