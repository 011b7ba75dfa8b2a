"""The import rules of docs/architecture.md, checked on every module's imports (those inside
functions too: a lazy import hides a dependency from the loader, not from a reader).

- the library (``safegen``) never imports training (``safegen_train``);
- nothing outside ``safegen.cli`` imports the CLI;
- a layer imports only from its own layer or below;
- there are no import cycles between modules.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("code_shape", REPO / "scripts" / "code_shape.py")
code_shape = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(code_shape)

# Bottom to top; docs/architecture.md draws the same order.
LAYERS = {
    "safegen.core": 0,
    "safegen.data": 1,
    "safegen.models": 2,
    "safegen.safety": 3,
    "safegen.pipelines": 3,
    "safegen.retrieval": 3,
    "safegen.jobs": 4,
    "safegen.evaluation": 5,
    "safegen.testing": 5,
    "safegen.serve": 6,
    "safegen_train": 6,
    "safegen.cli": 7,
}


def _layer(module: str) -> int | None:
    for prefix, rank in sorted(LAYERS.items(), key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None  # the package roots (safegen, safegen.__init__) sit outside the layers


def _graph() -> dict[str, set[str]]:
    return {name: code_shape.module_imports(path, top_level_only=False) for name, path in code_shape.iter_modules()}


def test_every_library_module_has_a_layer():
    unplaced = [m for m, _ in code_shape.iter_modules() if _layer(m) is None and m not in ("safegen", "safegen_train")]
    assert not unplaced, f"modules outside every layer (add them to LAYERS and docs/architecture.md): {unplaced}"


def test_inference_never_imports_training():
    bad = [
        (m, i)
        for m, imports in _graph().items()
        if m.startswith("safegen.") or m == "safegen"
        for i in imports
        if i.startswith("safegen_train")
    ]
    assert not bad, bad


def test_only_the_cli_imports_the_cli():
    bad = [
        (m, i)
        for m, imports in _graph().items()
        if not m.startswith("safegen.cli")
        for i in imports
        if i.startswith("safegen.cli")
    ]
    assert not bad, bad


def test_lower_layers_never_import_higher_ones():
    bad = []
    for module, imports in _graph().items():
        here = _layer(module)
        if here is None:
            continue
        bad += [f"{module} -> {i}" for i in imports if (_layer(i) or 0) > here]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    cycles = code_shape.import_cycles(_graph())
    assert not cycles, [" <-> ".join(c) for c in cycles]


def test_help_does_not_import_torch():
    code = (
        "import sys, safegen.cli.main, safegen_train.cli; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout
