"""Held-out gain of the sweep: a trained fold's planned inference settings vs the values rud_sweep chose.

Each held-out image (e.g. a task's imagesTs, which neither training nor the sweep saw) is predicted once
with the views every compared setting needs (every kept checkpoint and mirroring unless all of them ask
for fewer), its raw views kept; the same views are then
consolidated, post-processed and exported twice through the prediction path (``PredictionRun.replay``):
with the plans' inference settings as planned, and with the fold's sweep.json on top. Both runs are
evaluated against the labels; the figures go to a JSON and a printed table.

One network pass gives both runs, so the comparison is exact (same views) and cheap. ``rud_predict`` with
and without ``--planned-settings`` gives the same predictions when the sweep keeps every checkpoint and
mirroring (it predicts only the views the settings ask for otherwise).

    python scripts/sweep_gain.py -t Task101_ToyShapes --fold 0 --out sweep_gain_shapes.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from retinaunet.inference.cli import find_input_cases, resolve_model_dir
from retinaunet.inference.pipeline import PredictionRun
from tqdm import tqdm

from retinaunet.evaluation.evaluate import evaluate_cases
from retinaunet.evaluation.io import load_ground_truth, load_predictions
from retinaunet.io import read_case
from retinaunet.layout import TaskPaths
from retinaunet.model_folder import ModelFolder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-t", "--task", required=True)
    p.add_argument("--model", default="retina_unet")
    p.add_argument("--plan", default=None)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("-i", "--input", type=Path, default=None, help="held-out images (default: the task's imagesTs)")
    p.add_argument("-l", "--labels", type=Path, default=None, help="their labels (default: labelsTs)")
    p.add_argument("--max-cases", type=int, default=None, help="only the first N held-out cases (sorted names)")
    p.add_argument("--also", action="append", default=[], metavar="NAME=SWEEP_JSON",
                   help="replay the values another sweep file chose as well (e.g. one written by an earlier rule)")
    p.add_argument("-o", "--out", type=Path, required=True, help="JSON with the figures; predictions beside it")
    args = p.parse_args()

    from retinaunet.preprocessing.preprocess import preprocess_case

    torch.set_num_threads(max(1, torch.get_num_threads()))
    paths = TaskPaths.from_task(args.task)
    folder = ModelFolder(resolve_model_dir(args.task, args.model, args.plan))
    planned = folder.load_plans()
    tuned, source = folder.tuned_plans([args.fold])
    if source is None:
        raise SystemExit(f"{folder.path}: fold {args.fold} has no sweep.json; run rud_sweep first")
    out_root = args.out.with_suffix("")
    settings = [("planned", planned), ("swept", tuned)]
    for item in args.also:
        name, _, file = item.partition("=")
        other = planned.copy()
        for key, value in json.loads(Path(file).read_text())["chosen"].items():
            other.override(f"inference.{key}", value, source=file)
        settings.append((name, other))
    # the views every replayed setting needs (a CPU plan that limits its ensemble is not predicted whole)
    all_views = planned.copy()
    wanted = [p.inference.checkpoints for _, p in settings]
    all_views.inference.checkpoints = None if None in wanted else max(wanted)
    all_views.inference.mirror = any(p.inference.mirror for _, p in settings)
    models, all_views, ranks = folder.load_models([args.fold], "cpu", plans=all_views, with_ranks=True)
    predict = PredictionRun(models, all_views, predictor_options={"keep_raw": True, "member_rank": ranks})
    runs = {name: PredictionRun(models, plans, out_dir=out_root / name) for name, plans in settings}
    cases = find_input_cases(args.input or paths.images_ts, planned)
    names = sorted(cases)[: args.max_cases]
    for name in tqdm(names, desc="held-out cases"):
        images, geometry = read_case(cases[name])
        data, _, props = preprocess_case(images, geometry, planned, case=name)
        raw = predict.case(data, {**props, "case": name}).raw
        for run in runs.values():
            run.replay(raw, {**props, "case": name})
    labels = args.labels or paths.labels_ts
    gt = load_ground_truth(labels, names)
    dim = next(iter(gt.values())).boxes.shape[1] // 2
    figures = {"task": paths.name, "fold": args.fold, "cases": len(names), "sweep": str(source),
               "chosen": json.loads(Path(source).read_text())["chosen"]}
    for run_name, run in runs.items():
        run.finish()
        preds = load_predictions(run.out_dir, names, dim)
        metrics, _ = evaluate_cases(preds, gt, planned.num_classes, (0.1,), planned.class_names)
        figures[run_name] = {"mAP@0.1": metrics["mAP"]["0.1"], "mAP@0.1:0.5": metrics["mAP_0.1:0.5"],
                             "CPM": metrics["FROC"]["mean_CPM"], "patient_mAP": metrics["patient_mAP"],
                             "boxes_per_case": sum(metrics["num_detections"].values()) / len(names)}
    args.out.write_text(json.dumps(figures, indent=2))
    print(f"{paths.name} fold {args.fold}, {len(names)} held-out case(s)")
    print(f"{'settings':<9} {'mAP@0.1':>8} {'mAP@.1:.5':>10} {'CPM':>7} {'patientAP':>10} {'boxes/case':>11}")
    for run_name in runs:
        f = figures[run_name]
        print(f"{run_name:<9} {f['mAP@0.1']:>8.4f} {f['mAP@0.1:0.5']:>10.4f} {f['CPM']:>7.4f} "
              f"{f['patient_mAP']:>10.4f} {f['boxes_per_case']:>11.1f}")


if __name__ == "__main__":
    main()
