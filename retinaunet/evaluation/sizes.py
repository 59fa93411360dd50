"""Metrics per object-size bucket (in mm): AP at the first IoU threshold and FROC, as LIDC studies report.

An object's size is its largest in-plane extent in mm (the axial diameter; both axes in 2D), from its box
and the label image's spacing. For a bucket, as COCO does for its area ranges: objects of other sizes are
left out, and so are the detections that match one of them (IoU >= threshold, best match) and the
unmatched detections whose own size lies outside the bucket; the rest is evaluated as usual. Each bucket
has the mean AP over the classes with objects in it, the class-agnostic AP (all classes as one: with few
objects per bucket and class it is the steadier number), and the class-agnostic FROC and CPM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from retinaunet.boxes import box_iou_np
from retinaunet.evaluation.io import CaseBoxes
from retinaunet.evaluation.metrics import evaluate_cases

__all__ = ["SIZE_BUCKETS_MM", "bucket_names", "box_size_mm", "label_spacings", "evaluate_by_size",
           "format_size_table"]

SIZE_BUCKETS_MM = (6.0, 10.0, 20.0)  # < 6, 6-10, 10-20, > 20 mm (LIDC-like)


def bucket_names(edges: Sequence[float] = SIZE_BUCKETS_MM) -> list[str]:
    """``['<6', '6-10', '10-20', '>20']`` for the default edges."""
    e = [f"{v:g}" for v in edges]
    return [f"<{e[0]}"] + [f"{a}-{b}" for a, b in zip(e[:-1], e[1:])] + [f">{e[-1]}"]


def box_size_mm(boxes: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Largest in-plane extent in mm of boxes ``[N, 2*dim]`` (array index space) -> ``[N]``."""
    boxes = np.asarray(boxes, dtype=float)
    dim = boxes.shape[1] // 2
    extent = (boxes[:, dim:] - boxes[:, :dim]) * np.asarray(spacing, dtype=float)[None, -dim:]
    return extent[:, -2:].max(axis=1) if len(boxes) else np.zeros(0)


def label_spacings(files: Mapping[str, str | Path]) -> dict[str, tuple[float, ...]]:
    """``{case: spacing in array order}`` read from the label images' headers (no pixel data)."""
    out = {}
    for case, path in files.items():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        out[case] = tuple(float(s) for s in reversed(reader.GetSpacing()))
    return out


def _bucket(sizes: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, dtype=float), sizes, side="right")


def _restrict(pred: CaseBoxes, gt: CaseBoxes, spacing: Sequence[float], bucket: int, edges: Sequence[float],
              iou: float) -> tuple[CaseBoxes, CaseBoxes]:
    """The case's objects of one bucket, and its detections less those that belong to other sizes."""
    gt_in = _bucket(box_size_mm(gt.boxes, spacing), edges) == bucket
    det_in = _bucket(box_size_mm(pred.boxes, spacing), edges) == bucket
    keep = det_in.copy()
    if len(gt.boxes) and len(pred.boxes):
        ious = box_iou_np(pred.boxes, gt.boxes)  # [D, G]
        best = ious.argmax(axis=1)
        hit = ious[np.arange(len(best)), best] >= iou
        keep = np.where(hit, gt_in[best], det_in)
    scores = pred.scores[keep] if pred.scores is not None else None
    return (CaseBoxes(pred.boxes[keep], pred.labels[keep], scores),
            CaseBoxes(gt.boxes[gt_in], gt.labels[gt_in]))


def evaluate_by_size(predictions: Mapping[str, CaseBoxes], ground_truth: Mapping[str, CaseBoxes],
                     spacings: Mapping[str, Sequence[float]], num_classes: int, iou: float = 0.1,
                     class_names: Sequence[str] | None = None, max_detections: int = 100,
                     edges: Sequence[float] = SIZE_BUCKETS_MM) -> dict:
    """``{"iou", "edges_mm", "size", "buckets": {name: {objects, mAP, AP_any, AP, FROC sensitivities, CPM}}}``."""
    cases = sorted(ground_truth)
    dim = ground_truth[cases[0]].boxes.shape[1] // 2
    buckets = {}
    for b, name in enumerate(bucket_names(edges)):
        preds, gts = {}, {}
        for case in cases:
            pred = predictions.get(case) or CaseBoxes.empty(dim)
            preds[case], gts[case] = _restrict(pred, ground_truth[case], spacings[case], b, edges, iou)
        n = int(sum(len(g.labels) for g in gts.values()))
        if n == 0:
            buckets[name] = {"objects": 0, "mAP": None, "AP_any": None, "AP": None, "FROC": None}
            continue
        per_class, _ = evaluate_cases(preds, gts, num_classes, [iou], class_names, max_detections)
        one = {c: CaseBoxes(p.boxes, np.zeros_like(p.labels), p.scores) for c, p in preds.items()}
        one_gt = {c: CaseBoxes(g.boxes, np.zeros_like(g.labels)) for c, g in gts.items()}
        agnostic, _ = evaluate_cases(one, one_gt, 1, [iou], ["any"], max_detections)
        key = f"{iou:g}"
        buckets[name] = {
            "objects": n,
            "mAP": per_class["mAP"][key],
            "AP_any": agnostic["AP"][key]["any"],
            "AP": per_class["AP"][key],
            "FROC": {"rates": agnostic["FROC"]["rates"], "sensitivity": agnostic["FROC"]["sensitivity"]["any"],
                     "CPM": agnostic["FROC"]["CPM"]["any"]},
        }
    return {"iou": iou, "edges_mm": list(edges),
            "size": "largest in-plane box extent in mm (axial diameter)", "buckets": buckets}


def format_size_table(by_size: dict) -> str:
    """One row per size bucket: objects, mean AP over classes, class-agnostic AP, CPM (percent)."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    iou = f"{by_size['iou']:g}"
    header = ["size (mm)", "objects", f"mAP@{iou}", f"AP@{iou} any class", "CPM any class"]
    rows = [[name, str(r["objects"]), pct(r["mAP"]), pct(r["AP_any"]), pct(r["FROC"]["CPM"] if r["FROC"] else None)]
            for name, r in by_size["buckets"].items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([f"by object size ({by_size['size']}), values in %", line(header),
                      line(["-" * w for w in widths]), *[line(r) for r in rows]])
