#!/usr/bin/env bash
# Set up .venv in the repository: the pinned CPU build of torch where no torch is present, then this
# package in editable mode with its test, LIDC and DICOM extras. Idempotent: a second run only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    echo "installing torch (CPU build) into .venv"
    .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
fi
stamp=.venv/.retinaunet-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing retinaunet-detection and its dependencies into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e ".[test,lidc,dicom]"
    echo "$want" > "$stamp"
fi
