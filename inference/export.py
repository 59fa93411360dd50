"""Writing predictions in the original image's space: one JSON per case, one CSV per run, NIfTI masks.

Coordinates, precisely:

- ``box``: half-open extents ``[lo_0, lo_1, (lo_2), hi_0, hi_1, (hi_2)]`` in the original image's array
  index space (array order, e.g. z, y, x); voxel ``i`` spans ``[i, i+1)``. Mapped from the
  preprocessed grid by :class:`retinaunet.coordinates.CaseCoordinates` (undoes resampling and cropping).
- ``center_world``: SimpleITK physical point (x, y, z) in mm (LPS, the image's own frame) of the box
  centre, and ``size_mm``: ``(hi - lo) * spacing`` along the array axes (see :mod:`retinaunet.coordinates`).

``--save-seg`` writes ``<case>_seg.nii.gz`` (argmax of the segmentation output: 0 background, c+1 for
class c) and ``--save-boxes`` writes ``<case>_boxes.nii.gz`` where the voxels whose centres lie in box k
of the JSON list hold k+1 (higher scores painted last, so they win where boxes overlap).
``--save-instances`` writes ``<case>_instances.nii.gz``: the voxels of box k that the segmentation gives
its class hold k+1 (:mod:`retinaunet.inference.instances`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from retinaunet.inference.instances import box_mask, instance_map
from retinaunet.inference.predictor import CasePrediction

from retinaunet.coordinates import CaseCoordinates
from retinaunet.io import atomic_path, read_json, write_image, write_json

__all__ = ["boxes_to_original", "box_mask", "export_case", "output_files",
           "read_predictions", "seg_to_original", "write_run_csv"]

AXES = {2: ("y", "x"), 3: ("z", "y", "x")}
CSV_NAME = "predictions.csv"


def boxes_to_original(boxes: np.ndarray, props: dict[str, Any]) -> np.ndarray:
    """Boxes ``[K, 2*dim]`` of the preprocessed grid -> original index space, clipped to the image."""
    return CaseCoordinates.from_props(props).to_original(boxes)


def seg_to_original(seg: np.ndarray, props: dict[str, Any]) -> np.ndarray:
    """Label map ``[*S]`` of the preprocessed grid -> ``uint8[*original shape]`` (nearest voxel, 0 outside
    the crop), consistent with the box mapping: original voxel i takes the preprocessed voxel holding
    its centre (edge coordinate i + 0.5)."""
    coords = CaseCoordinates.from_props(props)
    out = np.zeros(coords.original.shape, dtype=np.uint8)
    index, region = [], []
    for axis in range(coords.dim):
        j = coords.original_index_of(axis)
        valid = np.flatnonzero((j >= 0) & (j < seg.shape[axis]))
        if valid.size == 0:
            return out
        region.append(slice(int(valid[0]), int(valid[-1]) + 1))
        index.append(j[valid[0]: valid[-1] + 1])
    out[tuple(region)] = seg[np.ix_(*index)]
    return out


def output_files(out_dir: str | os.PathLike, case: str, save_seg: bool = False, save_boxes: bool = False,
                 save_instances: bool = False) -> list[Path]:
    """Files ``export_case`` writes for ``case``."""
    out_dir = Path(out_dir)
    files = [out_dir / f"{case}.json"]
    if save_seg:
        files.append(out_dir / f"{case}_seg.nii.gz")
    if save_boxes:
        files.append(out_dir / f"{case}_boxes.nii.gz")
    if save_instances:
        files.append(out_dir / f"{case}_instances.nii.gz")
    return files


def export_case(pred: CasePrediction, props: dict[str, Any], out_dir: str | os.PathLike,
                class_names: Sequence[str] | None = None, save_seg: bool = False,
                save_boxes: bool = False, metadata: dict[str, Any] | None = None,
                save_instances: bool = False) -> Path:
    """Write ``<out_dir>/<case>.json`` (and the optional NIfTI masks); returns the JSON's path.

    ``metadata``: entries added to the JSON (e.g. ``settings``: the inference settings the run used).
    """
    out_dir = Path(out_dir)
    case = str(props["case"])
    coords = CaseCoordinates.from_props(props)
    geometry = coords.original
    boxes = coords.to_original(pred.boxes)
    order = np.argsort(-np.asarray(pred.scores), kind="stable")
    boxes, scores, labels = boxes[order], np.asarray(pred.scores)[order], np.asarray(pred.labels)[order]
    centres, sizes = coords.to_world(boxes)
    entries = []
    for box, score, label, centre, size in zip(boxes, scores, labels, centres, sizes):
        entry = {"class": int(label), "score": float(score), "box": [float(v) for v in box],
                 "center_world": [float(v) for v in centre], "size_mm": [float(v) for v in size]}
        if class_names is not None and 0 <= int(label) < len(class_names):
            entry["class_name"] = str(class_names[int(label)])
        entries.append(entry)
    doc = {"case": case, "shape": list(geometry.shape), "spacing": list(geometry.spacing),
           "origin": list(geometry.origin), "direction": list(geometry.direction), "boxes": entries,
           **(metadata or {})}
    if props.get("source_name"):  # the original name of a converted case (e.g. a LUNA16 seriesuid)
        doc["source_name"] = str(props["source_name"])
    if save_seg:
        if pred.seg is None:
            raise ValueError(f"{case}: no segmentation to save (this model has no segmentation output)")
        write_image(seg_to_original(pred.seg, props), geometry, out_dir / f"{case}_seg.nii.gz")
    if save_boxes:
        write_image(box_mask(boxes, geometry.shape), geometry, out_dir / f"{case}_boxes.nii.gz")
    if save_instances:
        if pred.seg is None:
            raise ValueError(f"{case}: no segmentation to cut instances from (this model has no segmentation output)")
        write_image(instance_map(seg_to_original(pred.seg, props), boxes, labels), geometry,
                    out_dir / f"{case}_instances.nii.gz")
    return write_json(doc, out_dir / f"{case}.json")


def read_predictions(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every prediction JSON in ``out_dir`` (files with "case" and "boxes"), sorted by case."""
    docs = []
    for path in sorted(Path(out_dir).glob("*.json")):
        if path.name.startswith("."):  # another writer's temporary file
            continue
        doc = read_json(path)
        if isinstance(doc, dict) and "case" in doc and "boxes" in doc:
            docs.append(doc)
    return sorted(docs, key=lambda d: d["case"])


def write_run_csv(out_dir: str | os.PathLike, name: str = CSV_NAME) -> Path:
    """``<out_dir>/predictions.csv``: one row per box of every prediction JSON in ``out_dir``.

    Columns: case, class, class_name, score, center_x_mm, center_y_mm, (center_z_mm), size_<axis>_mm in
    array order, then the box in original index coordinates (<axis>0 ..., <axis>1 ...), and source_name
    (the original case name, e.g. a LUNA16 seriesuid) when the cases were renamed by a converter. Numbers are
    written in full, as in the JSONs (the shortest text that reads back as the same float).
    """
    out_dir = Path(out_dir)
    docs = read_predictions(out_dir)
    dim = len(docs[0]["shape"]) if docs else 3
    axes = AXES[dim]
    header = ["case", "class", "class_name", "score", *[f"center_{a}_mm" for a in "xyz"[:dim]],
              *[f"size_{a}_mm" for a in axes], *[f"{a}0" for a in axes], *[f"{a}1" for a in axes]]
    named = any(doc.get("source_name") for doc in docs)
    if named:
        header.append("source_name")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for doc in docs:
        for b in doc["boxes"]:
            writer.writerow([doc["case"], b["class"], b.get("class_name", ""), float(b["score"]),  # in full
                             *map(float, b["center_world"]), *map(float, b["size_mm"]), *map(float, b["box"]),
                             *([doc.get("source_name", "")] if named else [])])
    path = out_dir / name
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return path
