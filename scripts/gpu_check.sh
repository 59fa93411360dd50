#!/usr/bin/env bash
# What only a GPU shows, in one run of a few minutes on a CUDA machine:
#  1. the planner's GPU plans for the 2D shapes toy and the 3D spheres toy (paper-sized networks);
#  2. scripts/bench_gpu.py: training step of those plans in float32 and bf16 autocast, peak memory
#     against the planner's estimate, patches per second;
#  3. the pipeline on CUDA: rud_train (AMP, loader workers) on the shapes toy with the GPU plan for a
#     fixed wall-clock budget, then rud_predict (mirroring, the kept epochs) and rud_evaluate on
#     held-out images;
#  4. the CT-scale nodule task (rud_example nodules) with its GPU plan, trained for NODULE_SECONDS, then
#     predicted and evaluated with AP and FROC per nodule size bucket;
#  5. whole-case inference of a CT-sized volume (300 x 512 x 512 preprocessed voxels) with the planner's
#     GPU plan for a CT cohort on this card (scripts/bench_inference.py --network ct-plan: its tile, batch
#     and ResNet50-FPN, random weights), once without and once with the 8 mirrored views: seconds per case
#     and peak GPU memory, beside nnDetection's published figure of about 4 minutes per case.
# Works without installing the package (a staged copy, console scripts wrapped); needs torch with CUDA, SimpleITK,
# batchgenerators, loguru and the other requirements importable by $PY.
#   bash scripts/gpu_check.sh [OUTDIR]          # knobs: TRAIN_SECONDS (default 240), NUM_TRAIN, NUM_TEST,
#                                               #        NODULE_SECONDS (default 180),
#                                               #        CT_SECONDS (default 900: limit of step 5)
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUTDIR" "${RUD_DATA:-/tmp/rud_gpu}"
# the installed layout without installing: the stage folders inside the retinaunet namespace
STAGE=$(mktemp -d)
cp -r retinaunet "$STAGE/"
for d in planning preprocessing inference; do cp -r "$d" "$STAGE/retinaunet/$d"; done
export RUD_DATA=${RUD_DATA:-/tmp/rud_gpu} PYTHONUNBUFFERED=1 PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
BIN=$(mktemp -d)
for pair in rud_example:retinaunet.toy_cli rud_plan:retinaunet.planning.cli rud_preprocess:retinaunet.preprocessing.cli \
            rud_train:retinaunet.training.cli rud_predict:retinaunet.inference.cli rud_evaluate:retinaunet.evaluation.cli; do
    printf '#!/bin/sh\nexec %s -c "import sys; from %s import main; sys.exit(main())" "$@"\n' "$PY" "${pair#*:}" \
        > "$BIN/${pair%%:*}"
    chmod +x "$BIN/${pair%%:*}"
done
export PATH="$BIN:$PATH"
LOG="$OUTDIR/gpu_check.log"
step() { echo "== $* ($(date +%T))" | tee -a "$LOG"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" 2>&1 | tee -a "$LOG"

step "toy data and GPU plans"
rud_example shapes --num-train "${NUM_TRAIN:-1000}" --num-test "${NUM_TEST:-200}" --force --quiet >> "$LOG" 2>&1
rud_example spheres --num-train 40 --num-test 10 --force --quiet >> "$LOG" 2>&1
rud_plan -t 101 2>&1 | tee -a "$LOG" | tail -n 25
rud_plan -t 104 2>&1 | tee -a "$LOG" | tail -n 25
cp "$RUD_DATA/Task101_ToyShapes/plans.json" "$OUTDIR/plans_shapes_gpu.json"
cp "$RUD_DATA/Task104_ToySpheres/plans.json" "$OUTDIR/plans_spheres_gpu.json"

step "training step: float32 vs bf16 autocast"
$PY scripts/bench_gpu.py "$RUD_DATA/Task101_ToyShapes/plans.json" "$RUD_DATA/Task104_ToySpheres/plans.json" \
    --steps 15 --json "$OUTDIR/bench_gpu.json" 2>&1 | tee -a "$LOG" | tail -n 8

# train fold 0 of TASK_NUMBER (folder TASK_DIR, model folder PLAN_FOLDER) for SECONDS, then predict its
# imagesTs with the kept epochs and evaluate; NAME labels the copies in $OUTDIR
train_predict_evaluate() {
    local number=$1 task_dir=$2 plan_folder=$3 seconds=$4 name=$5
    rud_preprocess -t "$number" >> "$LOG" 2>&1
    timeout "$seconds" rud_train 0 -t "$number" --force --no-test >> "$LOG" 2>&1
    echo "rud_train exit $? (124: stopped by the time budget)" | tee -a "$LOG"
    local fold="$task_dir/models/$plan_folder/fold0" pred="$task_dir/predictions/gpu_check"
    grep "val mAP" "$fold/train.log" | sed 's/.*epoch/epoch/' | tee -a "$LOG" | tail -n 12
    cp "$fold/train.log" "$OUTDIR/train_${name}_gpu.log" 2>/dev/null
    cp "$fold/curves.png" "$OUTDIR/curves_${name}_gpu.png" 2>/dev/null
    rm -rf "$pred"
    local start=$SECONDS
    rud_predict -t "$number" -i "$task_dir/raw_splitted/imagesTs" -o "$pred" --folds 0 >> "$LOG" 2>&1
    echo "rud_predict exit $?, $((SECONDS - start)) s for $(ls "$task_dir/raw_splitted/imagesTs" | wc -l) test images" \
        | tee -a "$LOG"
    rud_evaluate -t "$number" -p "$pred" -l "$task_dir/raw_splitted/labelsTs" -o "$pred/evaluation" 2>&1 \
        | tee -a "$LOG" | tail -n 24
    cp "$pred/evaluation/metrics.json" "$OUTDIR/metrics_${name}_gpu.json" 2>/dev/null
}

step "pipeline on CUDA: shapes, training for ${TRAIN_SECONDS:-240} s"
train_predict_evaluate 101 "$RUD_DATA/Task101_ToyShapes" retina_unet_2d "${TRAIN_SECONDS:-240}" shapes

step "nodules at CT scale: the GPU plan, training for ${NODULE_SECONDS:-180} s, AP per size bucket"
rud_example nodules --force --quiet >> "$LOG" 2>&1
rud_plan -t 110 2>&1 | tee -a "$LOG" | tail -n 32
cp "$RUD_DATA/Task110_ToyNodules/plans.json" "$OUTDIR/plans_nodules_gpu.json"
train_predict_evaluate 110 "$RUD_DATA/Task110_ToyNodules" retina_unet_3d "${NODULE_SECONDS:-180}" nodules

step "whole-case inference: CT-sized volume 300 x 512 x 512, the GPU plan for a CT cohort"
timeout "${CT_SECONDS:-900}" $PY scripts/bench_inference.py --network ct-plan --gpu-memory 0 \
    --shape 300 512 512 --device cuda --only 0 2 --json "$OUTDIR/inference_ct_gpu.json" 2>&1 | tee -a "$LOG" | tail -n 8
echo "bench_inference exit ${PIPESTATUS[0]} (124: stopped by CT_SECONDS); nnDetection reports about 240 s per case" \
    | tee -a "$LOG"
step "done"
