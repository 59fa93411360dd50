#!/usr/bin/env bash
# The main job on built-in toy data. Writes under ./data (or $RUD_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUD_DATA=${RUD_DATA:-$PWD/data}
mkdir -p "$RUD_DATA"
.venv/bin/rud_example shapes --num-train 200 --num-test 100 --force --quiet
.venv/bin/python -c "import sys; from retinaunet.dataset import check_dataset; \
info = check_dataset(sys.argv[1]); print(f'{info.name}: valid, {info.dim}D, classes {info.class_names}')" \
    "$RUD_DATA/Task101_ToyShapes"
