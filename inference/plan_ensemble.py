"""Predictions of several configurations of a task merged into one (``rud_predict --plan 2d 3d``).

``rud_consolidate`` may find that the ensemble of two configurations (say 2d and 3d) beats either on the
validation cases. Each configuration predicts into its own folder with its own settings; the boxes of a
case from all of them, in the original image's index space that every export shares, are clustered by
WBC with each configuration as one view (a box that only one configuration found is damped), and written
as one prediction JSON per case in the same format, with the configurations' settings recorded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from retinaunet.inference.export import write_run_csv
from retinaunet.inference.wbc import consolidate

from retinaunet.coordinates import box_world
from retinaunet.io import Geometry, read_json, write_json

__all__ = ["merge_prediction_folders"]


def merge_prediction_folders(folders: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                             iou: float = 1e-5, chosen_by: str | None = None) -> list[Path]:
    """Merge the prediction JSONs of ``folders`` (one per configuration) case by case into ``out_dir``."""
    folders = [Path(f) for f in folders]
    out_dir = Path(out_dir)
    cases = sorted({p.stem for f in folders for p in f.glob("*.json") if "boxes" in read_json(p)})
    written = []
    for case in cases:
        docs = [read_json(f / f"{case}.json") for f in folders if (f / f"{case}.json").exists()]
        geometry = Geometry.from_dict({k: docs[0][k] for k in ("shape", "spacing", "origin", "direction")})
        dim = geometry.dim
        boxes = np.array([b["box"] for d in docs for b in d["boxes"]], dtype=np.float64).reshape(-1, 2 * dim)
        scores = np.array([b["score"] for d in docs for b in d["boxes"]], dtype=np.float64)
        labels = np.array([b["class"] for d in docs for b in d["boxes"]], dtype=np.int64)
        views = np.concatenate([np.full(len(d["boxes"]), i, dtype=np.int64) for i, d in enumerate(docs)])
        names = {b["class"]: b.get("class_name") for d in docs for b in d["boxes"]}
        boxes, scores, labels = consolidate(boxes, scores, labels, views, None, float(len(folders)),
                                            method="wbc", iou_threshold=iou, min_score=0.0)
        centres, sizes = box_world(boxes, geometry)
        entries = []
        for box, score, label, centre, size in zip(boxes, scores, labels, centres, sizes):
            entry = {"class": int(label), "score": float(score), "box": [float(v) for v in box],
                     "center_world": [float(v) for v in centre], "size_mm": [float(v) for v in size]}
            if names.get(int(label)) is not None:
                entry["class_name"] = names[int(label)]
            entries.append(entry)
        doc = {k: docs[0][k] for k in ("case", "shape", "spacing", "origin", "direction")}
        doc["boxes"] = entries
        doc["settings"] = {"ensemble_of": [str(f) for f in folders], "consolidation": "wbc", "wbc_iou": iou,
                           "configurations": [d.get("settings") for d in docs]}
        if chosen_by is not None:
            doc["settings"]["configuration_from"] = chosen_by
        written.append(write_json(doc, out_dir / f"{case}.json"))
    write_run_csv(out_dir)
    return written
