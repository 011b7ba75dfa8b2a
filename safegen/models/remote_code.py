"""Refuse model folders that ship their own Python code (``auto_map``), in one line.

safegen loads every model with ``trust_remote_code=False``: a folder or hub repo that
asks transformers to import code from it is refused up front, so the user is never
prompted and no code from a download ever runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safegen.core.errors import SafegenError

_CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json")

NO_REMOTE_CODE = {"trust_remote_code": False}


def refuse_remote_code(source: str | Path, config: Any = None) -> None:
    """Raise if ``source`` (a local folder) or an already-read ``config`` declares custom code via ``auto_map``."""
    found = None
    if config is not None and getattr(config, "auto_map", None):
        found = "config"
    folder = Path(str(source)).expanduser()
    if found is None and folder.is_dir():
        for name in _CONFIG_FILES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # unreadable files are reported by the loader that needs them
            if isinstance(data, dict) and data.get("auto_map"):
                found = name
                break
    if found is not None:
        raise SafegenError(
            f"'{source}' ships custom model code (auto_map in its {found}); safegen never runs code from a model "
            "folder (trust_remote_code=False): use a checkpoint saved with the standard transformers classes"
        )
