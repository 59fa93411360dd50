"""Evaluate a folder of predictions, or the pooled test predictions of the cross-validation folds.

:func:`evaluate_folder` reads a prediction folder and a label folder and writes ``metrics.json`` and
the curves; :func:`evaluate_cv` pools the test predictions of the folds. The metrics themselves come
from :func:`.metrics.evaluate_cases` (boxes in memory) and, per object size, from :mod:`.sizes`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from loguru import logger

from retinaunet.evaluation.io import CaseBoxes, EvaluationError, label_files, load_ground_truth, load_predictions
from retinaunet.evaluation.matching import DEFAULT_MAX_DETECTIONS
from retinaunet.evaluation.metrics import CONVENTIONS, evaluate_cases
from retinaunet.evaluation.plots import plot_froc, plot_pr_curves
from retinaunet.evaluation.sizes import SIZE_BUCKETS_MM, evaluate_by_size, label_spacings
from retinaunet.io import write_json
from retinaunet.splits import pooled_test_cases

__all__ = ["CONVENTIONS", "evaluate_cases", "evaluate_cv", "evaluate_folder", "write_results"]


def write_results(metrics: dict, curves: dict, out_dir: str | os.PathLike) -> Path:
    """Write ``metrics.json`` (atomic), ``pr_curves.png`` and ``froc.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    iou = f'{metrics["iou_thresholds"][0]:g}'
    plot_pr_curves(curves["pr"], out_dir / "pr_curves.png", title=f"Precision-recall at IoU {iou}")
    plot_froc(curves["froc"], metrics["FROC"]["rates"], out_dir / "froc.png", title=f"FROC at IoU {iou}")
    return write_json(metrics, out_dir / "metrics.json")


def _num_classes(gt: Mapping[str, CaseBoxes], preds: Mapping[str, CaseBoxes], class_names) -> int:
    if class_names is not None:
        for case, p in preds.items():
            if len(p.labels) and p.labels.max() >= len(class_names):
                raise EvaluationError(f"{case}.json: class {int(p.labels.max())} but the task has "
                                      f"{len(class_names)} classes (0..{len(class_names) - 1})")
        return len(class_names)
    top = max([int(b.labels.max()) for b in [*gt.values(), *preds.values()] if len(b.labels)], default=0)
    return top + 1


def _evaluate(pred_dirs, label_dir, cases, iou_thresholds, out_dir, class_names, max_detections, sources,
              size_edges=SIZE_BUCKETS_MM):
    gt = load_ground_truth(label_dir, cases)
    dim = next(iter(gt.values())).boxes.shape[1] // 2
    preds = load_predictions(pred_dirs, list(gt), dim)
    num_classes = _num_classes(gt, preds, class_names)
    metrics, curves = evaluate_cases(preds, gt, num_classes, iou_thresholds, class_names, max_detections)
    metrics = {**sources, "label_dir": str(label_dir), **metrics}
    if size_edges:
        files = label_files(label_dir)
        spacings = label_spacings({c: files[c] for c in gt})
        metrics["by_size"] = evaluate_by_size(preds, gt, spacings, num_classes, float(iou_thresholds[0]),
                                              class_names, max_detections, size_edges)
    if out_dir is not None:
        path = write_results(metrics, curves, out_dir)
        logger.info(f"metrics written to {path}")
    return metrics


def evaluate_folder(
    pred_dir: str | os.PathLike,
    label_dir: str | os.PathLike,
    iou_thresholds: Sequence[float] = (0.1,),
    out_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    size_edges: Sequence[float] | None = SIZE_BUCKETS_MM,
) -> dict:
    """Evaluate ``<pred_dir>/<case>.json`` against every labelled case in ``label_dir``.

    Writes metrics.json, pr_curves.png and froc.png into ``out_dir`` unless it is None; returns the
    metrics dict. Without ``class_names`` the classes are 0..max class seen. ``size_edges``: bucket edges
    in mm for the metrics per object size (``metrics["by_size"]``, see `.sizes`); None or empty: none.
    """
    return _evaluate(pred_dir, label_dir, None, iou_thresholds, out_dir, class_names, max_detections,
                     {"pred_dir": str(pred_dir)}, size_edges)


def evaluate_cv(
    task_dir: str | os.PathLike,
    model: str,
    plan: str,
    iou_thresholds: Sequence[float] = (0.1,),
    out_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    num_folds: int = 5,
    size_edges: Sequence[float] | None = SIZE_BUCKETS_MM,
) -> dict:
    """Pool the test predictions of the cross-validation folds and evaluate them against labelsTr.

    Reads ``<task>/models/<model>_<plan>/fold<k>/test_predictions/``. The cases evaluated are the test
    cases of splits.json when it lists them (a missing file then means no detections), otherwise the
    labelled cases that some fold predicted. A missing fold folder is a warning. Writes the results into
    ``out_dir`` unless it is None (``rud_evaluate --cv`` uses the model folder).
    """
    from retinaunet.layout import TaskPaths
    from retinaunet.model_folder import ModelFolder

    paths = TaskPaths(Path(task_dir))
    folder = ModelFolder(paths.model_dir(model, plan))
    dirs = [folder.fold(k).test_predictions for k in range(num_folds)]
    present = [d for d in dirs if d.is_dir()]
    for d in sorted(set(dirs) - set(present)):
        logger.warning(f"{d}: missing; its fold is left out of the pooled evaluation")
    if not present:
        raise EvaluationError(f"{paths.model_dir(model, plan)}: no fold<k>/test_predictions folders; "
                              "train and test the folds first (rud_train)")
    labelled = set(label_files(paths.labels_tr))
    cases = pooled_test_cases(paths.splits) if len(present) == len(dirs) else None
    if cases is None:
        cases = sorted({f.stem for d in present for f in d.glob("*.json")} & labelled)
    if not cases:
        raise EvaluationError(f"{paths.model_dir(model, plan)}: no prediction file matches a case in "
                              f"{paths.labels_tr}")
    return _evaluate(present, paths.labels_tr, cases, iou_thresholds, out_dir, class_names, max_detections,
                     {"pred_dirs": [str(d) for d in present]}, size_edges)
