"""Tuning a model folder's inference settings: raw validation predictions in, ``sweep.json`` out.

:func:`write_raw_predictions` predicts preprocessed cases once with every kept checkpoint and every
mirroring and keeps each case's views unconsolidated (``<case>.npz`` with its ground truth);
:func:`sweep_folds` pools the raw validation predictions of one or more folds, runs
:func:`retinaunet.inference.sweep.sweep` and writes the chosen values with the whole search table: into the fold
(``fold<k>/sweep.json``, ``sweep_table.csv``) for one fold, into the model folder for several.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger
from retinaunet.inference.raw import save_raw
from retinaunet.inference.sweep import SweepResult, load_sweep_cases, sweep
from tqdm import tqdm

from retinaunet import store
from retinaunet.coordinates import CaseCoordinates
from retinaunet.io import atomic_path, write_json
from retinaunet.model_folder import ModelFolder, ModelFolderError

__all__ = ["write_raw_predictions", "sweep_folds", "write_sweep"]

FEW_CASES = 30  # below this many validation cases of one fold, the sweep says how few it decided on


def write_raw_predictions(folder: ModelFolder, fold: int, pre_dir: str | os.PathLike, cases: Sequence[str],
                          out_dir: str | os.PathLike, device: str | torch.device = "cpu") -> list[Path]:
    """Predict ``cases`` of the preprocessed store with the plan's ensemble of ``fold`` (its kept checkpoints
    and mirrored views: all of them unless the plan limits them, as CPU plans of costly cases do), and
    write each case's raw views with its ground truth to ``out_dir/<case>.npz``. The sweep chooses within
    this ensemble."""
    from retinaunet.inference.pipeline import PredictionRun

    plans = folder.load_plans()
    models, plans, ranks = folder.load_models([fold], device, plans=plans, with_ranks=True)
    run = PredictionRun(models, plans, device, predictor_options={"keep_raw": True, "member_rank": ranks})
    written = []
    for case in tqdm(cases, desc=f"fold {fold} raw predictions", leave=False):
        data, props = store.load_case(pre_dir, case)
        pred = run.case(data, props)
        gt_boxes, gt_labels = store.ground_truth(props, plans.data_dim)
        frame = {}
        if {"original", "crop", "spacing", "shape"} <= set(props):  # to compare configurations in one frame
            coords = CaseCoordinates.from_props(props)
            frame = {"factors": coords.factors, "crop_lo": coords.crop_lo,
                     "original_shape": np.asarray(coords.original.shape)}
        written.append(save_raw(pred.raw, Path(out_dir) / f"{case}.npz", gt_boxes=gt_boxes, gt_labels=gt_labels,
                                **frame))
    logger.info(f"kept the raw predictions of {len(written)} case(s) ({len(models)} checkpoint(s) x "
                f"{len(run.predictor.views)} mirroring(s)) in {out_dir}")
    return written


def write_sweep(result: SweepResult, folds: Sequence[int], out_dir: str | os.PathLike) -> Path:
    """``sweep.json`` (chosen values, metric, folds, the table) and ``sweep_table.csv`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"folds": sorted(int(f) for f in folds), **result.to_dict()}
    columns = list(dict.fromkeys(k for row in result.table for k in row))
    with atomic_path(out_dir / "sweep_table.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in result.table:
            writer.writerow({k: (" ".join(str(x) for x in v) if isinstance(v, list) else v) for k, v in row.items()})
    return write_json(doc, out_dir / "sweep.json")


def sweep_folds(folder: ModelFolder, folds: Sequence[int], metric: str = "map", faster_ensemble: bool = False,
                **targets: float | None) -> tuple[SweepResult, Path]:
    """Sweep the pooled raw validation predictions of ``folds``; returns the result and the file written.

    ``faster_ensemble``: the sweep may choose fewer checkpoints or no mirroring than planned.
    ``targets``: ``target_sensitivity`` / ``target_fp`` of the proposed operating points.
    """
    cases = []
    for fold in folds:
        raw_dir = folder.fold(fold).val_raw
        found = load_sweep_cases(raw_dir)
        if not found:
            raise ModelFolderError(f"{raw_dir}: no raw validation predictions; rud_train writes them at the end "
                                   f"of a fold (or run rud_sweep with --predict to make them)")
        cases += found
    plans = folder.load_plans()
    result = sweep(cases, plans, metric, faster_ensemble=faster_ensemble, **targets)
    out = folder.fold(folds[0]).path if len(folds) == 1 else folder.path
    path = write_sweep(result, folds, out)
    logger.info(f"{metric} on {len(cases)} validation case(s) of fold(s) {list(folds)}: planned "
                f"{result.planned_value:.4f} -> chosen {result.value:.4f} ({result.decision['chosen']} settings); "
                f"{path}")
    if len(folds) == 1 and len(cases) < FEW_CASES:
        logger.warning(f"the sweep decided on the {len(cases)} validation case(s) of one fold; a setting replaced "
                       f"the planned one only for a gain that held under resampling. Train more folds and run "
                       f"rud_sweep (or rud_consolidate) to decide on their pooled validation cases")
    return result, path
