#!/usr/bin/env bash
# The main job: the whole pipeline on the paper's 'shapes' toy task, ending with mAP at IoU 0.1 on
# held-out toy images. Writes under ./data (or $RUD_DATA); every stage's output stays there to look at.
# Sized for a 2-core CPU: 10-15 minutes. Environment knobs: DEMO_TRAIN, DEMO_TEST, DEMO_EPOCHS,
# DEMO_BATCHES (batches per epoch).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUD_DATA=${RUD_DATA:-$PWD/data}
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p "$RUD_DATA"
TASK=Task101_ToyShapes
RUN="$RUD_DATA/$TASK/predictions/demo"

rud_example shapes --num-train "${DEMO_TRAIN:-200}" --num-test "${DEMO_TEST:-50}" --force --quiet
rud_plan -t "$TASK"
rud_preprocess -t "$TASK"
rud_train 0 -t "$TASK" --force ${DEMO_EPOCHS:+--epochs "$DEMO_EPOCHS"} \
    ${DEMO_BATCHES:+--batches-per-epoch "$DEMO_BATCHES"}
rm -rf "$RUN"
rud_predict -t "$TASK" -i "$RUD_DATA/$TASK/raw_splitted/imagesTs" -o "$RUN" --folds 0
rud_evaluate -t "$TASK" -p "$RUN" -l "$RUD_DATA/$TASK/raw_splitted/labelsTs" -o "$RUN/evaluation"
