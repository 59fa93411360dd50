"""Consolidation of a task's trained models: one ensemble of folds per configuration, and the choice between
configurations (2d, 2dc, 3d, 3dlr) by their pooled validation metric.

For each configuration (``models/<model>_<plan>``) :func:`consolidate_task` pools the raw validation
predictions of its trained folds, chooses one set of inference settings for the ensemble of those folds
(:func:`retinaunet.inference.tune.sweep_folds`, written to the model folder's ``sweep.json``) and records the folds
and checkpoints the ensemble holds (``ensemble.json``). It then compares the configurations on the
validation cases they share, in the original images' index space (their preprocessed grids may differ),
and tries the ensemble of the best two: each one's consolidated boxes are clustered together by WBC (each
configuration one view). The choice, the figures behind it and the reason go to ``models/consolidation.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from retinaunet.inference.raw import consolidate_raw
from retinaunet.inference.sweep import SweepCase, _post, load_sweep_cases, metric_value
from retinaunet.inference.tune import sweep_folds
from retinaunet.inference.wbc import consolidate

from retinaunet.io import write_json
from retinaunet.layout import TaskPaths
from retinaunet.model_folder import ModelFolder, ModelFolderError
from retinaunet.plans import Plans

__all__ = ["consolidate_task", "ensemble_of_two"]

MARGIN = 0.005  # an ensemble of two configurations must beat the best one by this much to be chosen


def _configurations(paths: TaskPaths, model: str, plans: Sequence[str] | None) -> list[str]:
    if plans:
        return list(plans)
    found = sorted(p.name.removeprefix(f"{model}_") for p in (paths.root / "models").glob(f"{model}_*")
                   if p.is_dir())
    return [name for name in found if ModelFolder(paths.model_dir(model, name)).available_folds()]


def _swept_folds(folder: ModelFolder) -> list[int]:
    return [f for f in folder.available_folds() if any(folder.fold(f).val_raw.glob("*.npz"))]


def _predictions(cases: Sequence[SweepCase], plans: Plans) -> dict[str, tuple[np.ndarray, ...]]:
    """Each case's consolidated and post-processed boxes with ``plans``' inference settings, in original
    index coordinates, and the ground truth in the same frame."""
    out = {}
    for case in cases:
        boxes, scores, labels = _post(consolidate_raw(case.raw, plans.inference), plans.inference,
                                      plans.inference.postprocess)
        out[case.name] = (case.to_original(boxes), scores, labels, case.to_original(case.gt_boxes), case.gt_labels)
    return out


def ensemble_of_two(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...], iou: float = 1e-5
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WBC over the boxes of two configurations for one case, each configuration one view (2 expected)."""
    boxes = np.concatenate([a[0], b[0]]).reshape(-1, a[0].shape[1] if len(a[0]) else b[0].shape[1])
    views = np.concatenate([np.zeros(len(a[0]), np.int64), np.ones(len(b[0]), np.int64)])
    return consolidate(boxes, np.concatenate([a[1], b[1]]), np.concatenate([a[2], b[2]]), views, None, 2.0,
                       method="wbc", iou_threshold=iou, min_score=0.0)


def _score(metric: str, preds: Sequence[tuple[np.ndarray, ...]], truth: Sequence[tuple[np.ndarray, ...]],
           num_classes: int) -> float:
    cases = [SweepCase(str(i), None, t[0], t[1]) for i, t in enumerate(truth)]  # type: ignore[arg-type]
    return metric_value(metric, [p[:3] for p in preds], cases, num_classes)


def consolidate_task(task: str | int | None, model: str = "retina_unet", plans: Sequence[str] | None = None,
                     metric: str = "map") -> dict[str, Any]:
    """Consolidate every configuration's folds and choose between configurations; returns the record."""
    paths = TaskPaths.from_task(task)
    names = _configurations(paths, model, plans)
    if not names:
        raise ModelFolderError(f"{paths.root / 'models'}: no trained {model}_<plan> folder; run rud_train first")
    record: dict[str, Any] = {"metric": metric, "model": model, "configurations": {}}
    per_plan: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
    num_classes = 1
    for name in names:
        folder = ModelFolder(paths.model_dir(model, name))
        folds = _swept_folds(folder)
        if not folds:
            raise ModelFolderError(f"{folder.path}: no fold with raw validation predictions; run rud_sweep "
                                   f"-t {paths.name} --plan {name} first")
        result, sweep_path = sweep_folds(folder, folds, metric)
        tuned, _ = folder.tuned_plans(folds)
        files, ranks = folder.ensemble_files(folds, tuned.inference.checkpoints)
        write_json({"folds": folds, "checkpoints": [str(f.relative_to(folder.path)) for f in files],
                    "settings": result.chosen, "metric": metric, "value": result.value}, folder.path / "ensemble.json")
        cases = [c for f in folds for c in load_sweep_cases(folder.fold(f).val_raw)]
        per_plan[name] = _predictions(cases, tuned)
        num_classes = tuned.num_classes
        record["configurations"][name] = {"folds": folds, "checkpoints": len(files), "cases": len(cases),
                                          "value_own_cases": result.value, "settings": str(sweep_path)}
    common = sorted(set.intersection(*(set(p) for p in per_plan.values())))
    record["common_cases"] = len(common)
    if not common:
        raise ModelFolderError("the configurations share no validation case; train them on the same folds")
    truth = [per_plan[names[0]][c][3:] for c in common]
    values = {name: _score(metric, [per_plan[name][c] for c in common], truth, num_classes) for name in names}
    for name, value in values.items():
        record["configurations"][name]["value"] = value
    ranked = sorted(names, key=lambda n: -values[n])
    best = ranked[0]
    record["choice"], why = [best], (f"{best} has the best pooled validation {metric} on {len(common)} shared "
                                     f"case(s): " + ", ".join(f"{n} {values[n]:.4f}" for n in ranked))
    if len(ranked) > 1:
        second = ranked[1]
        merged = [ensemble_of_two(per_plan[best][c], per_plan[second][c]) for c in common]
        value = _score(metric, merged, truth, num_classes)
        record["ensemble"] = {"plans": [best, second], "value": value}
        if math.isfinite(value) and value > values[best] + MARGIN:
            record["choice"] = [best, second]
            why = (f"the ensemble of {best} and {second} (WBC over both) reaches {metric} {value:.4f} on "
                   f"{len(common)} shared validation case(s), above {best} alone ({values[best]:.4f}) by more "
                   f"than {MARGIN}")
        else:
            why += (f"; the ensemble of {best} and {second} ({value:.4f}) does not beat {best} alone by more than "
                    f"{MARGIN}")
    record["why"] = why
    out = write_json(record, paths.root / "models" / "consolidation.json")
    logger.info(f"{why}; written to {out}")
    record["file"] = str(Path(out))
    return record
