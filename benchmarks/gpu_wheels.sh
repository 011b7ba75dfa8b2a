#!/usr/bin/env bash
# Build the wheel folder that benchmarks/gpu_suite.py needs on the GPU machine.
#
# Why: the GPU machine has torch, transformers, accelerate, peft, timm, safetensors and
# huggingface-hub, but not diffusers, open_clip_torch or their small pure-Python needs, and it
# cannot reach a package index. This script fetches those wheels here (with pip, through this
# machine's configured indexes), at the versions installed in this venv so the GPU runs the
# code the tests ran, and builds safegen's own wheel from this checkout.
#
#   benchmarks/gpu_wheels.sh [DIR]          # DIR defaults to .whl (git-ignored, in the repo root)
#
# Then on the GPU machine, from the repo root (DIR carried along with the checkout):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=$PWD:/tmp/site python3 benchmarks/gpu_suite.py --device cuda --json-out gpu_suite.json
#
# --no-deps: everything else the wheels need is already installed there (see
# benchmarks/README.md); the checkout comes first on PYTHONPATH, so the suite runs the
# checkout's safegen and the safegen wheel serves only a run away from the checkout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-"$ROOT/.whl"}
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
[ -x "$PY" ] || PY=python3
# Pure-Python packages the GPU machine lacks: diffusers (+ importlib_metadata),
# open_clip_torch (+ ftfy, which needs wcwidth).
PACKAGES=(diffusers importlib_metadata open_clip_torch ftfy wcwidth)

mkdir -p "$DIR"
specs=()
for name in "${PACKAGES[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
        echo "gpu_wheels.sh: $name is not installed in $PY; install it there first (pip install $name)" >&2
        exit 1
    }
    specs+=("$name==$version")
done

# The GPU machine runs CPython 3.12 on x86-64: pure-Python wheels match any tag; wcwidth's
# is an abi3 manylinux2014 wheel, hence the platforms.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DIR" "${specs[@]}"

# safegen itself, built from this checkout (no isolation: setuptools is already in the venv).
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" "$ROOT"

# One version of each package: two wheels of one name stop the whole install there.
dupes=$(ls "$DIR"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
    echo "gpu_wheels.sh: $DIR holds several versions of: $dupes; delete the old ones and run again" >&2
    exit 1
fi
ls -1 "$DIR"/*.whl
du -sh "$DIR" | awk '{print "total " $1 " (it travels with the checkout: keep the tree + wheels under 64 MiB)"}'
