#!/usr/bin/env bash
# The chest CT rehearsal: a cohort of whole scans in LUNA16's format through every stage, with the time per
# scan and the peak memory of each stage in one table (docs/chest_ct.md).
#
#   bash scripts/rehearse_ct.sh                                     # 20 scans of 512 x 512 x 120-400 (long on a CPU)
#   SCANS=6 SIZE=96 SLICES="32 48" TRAIN_BATCHES=4 bash scripts/rehearse_ct.sh      # a quick check, minutes
#
# Knobs (environment): RUD_DATA (default /tmp/rud_rehearse_ct), TASK (160), SCANS (20), SUBSETS (min(SCANS, 10)),
# SIZE (in-plane voxels, 512), SLICES ("120 400"), GPU_MEMORY (24: the GPU plan rehearsed on the CPU),
# GPU_STEPS (2), RAM_CAP_GB (6: the largest GPU-plan step run here), TRAIN_BATCHES (20: the CPU plan's short
# rud_train, one epoch), PREDICT_SCANS (2: whole scans of fold 0's test subset), DEVICE (cpu), PYTHON, OUT
# (where the log and table go, default $RUD_DATA/rehearsal).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PYTHON")
export RUD_DATA=${RUD_DATA:-/tmp/rud_rehearse_ct}
TASK=${TASK:-160}
SCANS=${SCANS:-20}
SUBSETS=${SUBSETS:-$(( SCANS < 10 ? SCANS : 10 ))}
SIZE=${SIZE:-512}
SLICES=${SLICES:-"120 400"}
GPU_MEMORY=${GPU_MEMORY:-24}
GPU_STEPS=${GPU_STEPS:-2}
RAM_CAP_GB=${RAM_CAP_GB:-6}
TRAIN_BATCHES=${TRAIN_BATCHES:-20}
PREDICT_SCANS=${PREDICT_SCANS:-2}
DEVICE=${DEVICE:-cpu}
OUT=${OUT:-$RUD_DATA/rehearsal}
SOURCE=$RUD_DATA/LUNA16_chestct
mkdir -p "$RUD_DATA" "$OUT"
LOG=$OUT/stages.jsonl
: > "$LOG"
stage() {  # stage NAME SCANS NOTE -- command...
  local name=$1 scans=$2 note=$3
  shift 4
  echo "== $name" >&2
  "$PYTHON" scripts/stage_stats.py --log "$LOG" --stage "$name" --scans "$scans" --note "$note" -- "$@"
}
if [ "$SCANS" -lt 3 ]; then echo "SCANS must be at least 3 (three subsets give train, val and test)" >&2; exit 2; fi

stage "rud_example chestct" "$SCANS" "$SIZE x $SIZE, $SLICES slices" -- \
  "$BIN/rud_example" chestct --num-scans "$SCANS" --subsets "$SUBSETS" --size "$SIZE" --slices $SLICES \
  --out "$SOURCE" --force --quiet
TASK_DIR=$RUD_DATA/$(printf "Task%03d_Luna16" "$TASK")
rm -rf "$TASK_DIR"
stage "rud_convert luna16" "$SCANS" "mhd -> NIfTI, spheres painted in world mm" -- \
  "$BIN/rud_convert" luna16 "$SOURCE" -t "$TASK" --quiet
TASK_DIR=$(ls -d "$RUD_DATA"/Task"$(printf %03d "$TASK")"_* | head -1)

stage "rud_plan --gpu-memory $GPU_MEMORY" "$SCANS" "fingerprint (body boxes) and the GPU plan" -- \
  "$BIN/rud_plan" -t "$TASK" --gpu-memory "$GPU_MEMORY"
cp "$TASK_DIR/plans.json" "$OUT/plans_gpu$GPU_MEMORY.json"
stage "rud_plan (CPU)" "$SCANS" "fingerprint reused" -- "$BIN/rud_plan" -t "$TASK"
cp "$TASK_DIR/plans.json" "$OUT/plans_cpu.json"
"$BIN/rud_plan" -t "$TASK" 2>/dev/null | sed -n '/^entry/,$p' > "$OUT/plan_table_cpu.txt" || true

# two processes, each its half of the cohort (as two machines sharing the task folder would)
stage "rud_preprocess --shard 0/2" $(( (SCANS + 1) / 2 )) "beside shard 1/2, 1 worker each" -- \
  "$BIN/rud_preprocess" -t "$TASK" --shard 0/2 --workers 1 &
first=$!
stage "rud_preprocess --shard 1/2" $(( SCANS / 2 )) "beside shard 0/2, 1 worker each" -- \
  "$BIN/rud_preprocess" -t "$TASK" --shard 1/2 --workers 1
wait $first

echo "== the GPU plan's training steps on the CPU" >&2
"$PYTHON" scripts/rehearse_step.py "$OUT/plans_gpu$GPU_MEMORY.json" --steps "$GPU_STEPS" --ram-cap-gb "$RAM_CAP_GB" \
  | tee "$OUT/gpu_step.md"

TRAIN_SCANS=$("$PYTHON" -c "import json,sys; print(len(json.load(open(sys.argv[1]))[0]['train']))" "$TASK_DIR/splits.json")
VAL_SCANS=$("$PYTHON" -c "import json,sys; print(len(json.load(open(sys.argv[1]))[0]['val']))" "$TASK_DIR/splits.json")
stage "rud_train 0 (CPU plan)" "$VAL_SCANS" "1 epoch of $TRAIN_BATCHES batches + validation of the $VAL_SCANS val scans; time per val scan" -- \
  "$BIN/rud_train" 0 -t "$TASK" --epochs 1 --batches-per-epoch "$TRAIN_BATCHES" --no-test --no-sweep --force \
  --device "$DEVICE"

PRED_IN=$OUT/predict_in
rm -rf "$PRED_IN" "$OUT/predictions"
mkdir -p "$PRED_IN"
"$PYTHON" - "$TASK_DIR" "$PRED_IN" "$PREDICT_SCANS" <<'PY'
import json, os, sys
from pathlib import Path
task, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for case in json.loads((task / "splits.json").read_text())[0]["test"][:n]:
    name = f"{case}_0000.nii.gz"
    os.symlink(task / "raw_splitted" / "imagesTr" / name, out / name)
PY
N_PRED=$(ls "$PRED_IN" | wc -l)
stage "rud_predict (whole scans)" "$N_PRED" "fold 0, one view (--no-tta), raw scans: crop, resample, tiles, export" -- \
  "$BIN/rud_predict" -t "$TASK" -i "$PRED_IN" -o "$OUT/predictions" --folds 0 --no-tta --no-report \
  --device "$DEVICE"
stage "rud_evaluate --luna" "$N_PRED" "the challenge's FROC / CPM" -- \
  "$BIN/rud_evaluate" -t "$TASK" -p "$OUT/predictions" --luna --annotations "$SOURCE/annotations.csv" \
  --excluded "$SOURCE/annotations_excluded.csv"

"$PYTHON" - "$TASK_DIR" <<'PY' | tee "$OUT/crop.md"
import json, sys
from pathlib import Path
import numpy as np
task = Path(sys.argv[1])
plans = json.loads((task / "plans.json").read_text())
conf = plans["configurations"][plans["default"]] if "configurations" in plans else plans
print(f"crop: {conf['crop']['method']} - {conf['reasons'].get('crop', '')}")
kept = []
for props in sorted((task / "preprocessed").glob("*/*.json")):
    p = json.loads(props.read_text())
    full = np.prod(p["original"]["shape"])
    kept.append(np.prod([hi - lo for lo, hi in p["crop"]]) / full)
if kept:
    print(f"preprocessed cases: {len(kept)}, voxels kept by the crop: median {np.median(kept):.0%}, "
          f"{min(kept):.0%}-{max(kept):.0%}")
PY
echo
echo "per-stage table ($SCANS scans of $SIZE x $SIZE x $SLICES slices; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)):"
"$PYTHON" scripts/stage_stats.py --log "$LOG" --table | tee "$OUT/stages.md"
