"""Reading what evaluation needs: ground-truth boxes from instance maps, boxes from prediction JSONs.

Ground truth: ``<labels>/<case>.nii.gz`` (any image format) + ``<case>.json`` ``{"instances": {id: class}}``;
each instance's box is the tight half-open box of its voxels. Predictions: ``<pred>/<case>.json`` as
``rud_predict`` writes it; only each entry's "box", "score" and "class" are read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger
from tqdm import tqdm

from retinaunet.boxes import boxes_from_instance_map
from retinaunet.io import IMAGE_SUFFIXES, ReadError, label_json_path, read_json, read_label, strip_image_suffix
from retinaunet.progress import hidden

__all__ = ["CaseBoxes", "EvaluationError", "label_files", "load_ground_truth", "load_predictions", "read_prediction"]


class EvaluationError(RuntimeError):
    """Input that cannot be evaluated; the message names the file and the fix."""


@dataclass
class CaseBoxes:
    """Boxes of one case: boxes float[N, 2*dim], labels int[N] (classes from 0), scores float[N] or None."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    @classmethod
    def empty(cls, dim: int, with_scores: bool = True) -> CaseBoxes:
        return cls(np.zeros((0, 2 * dim)), np.zeros(0, dtype=np.int64), np.zeros(0) if with_scores else None)


def label_files(label_dir: str | os.PathLike) -> dict[str, Path]:
    """``{case: label image}`` for every image file in ``label_dir``."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise EvaluationError(f"{label_dir}: label folder not found; pass -l LABELS_DIR")
    files = {}
    for f in sorted(label_dir.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(IMAGE_SUFFIXES):
            files[strip_image_suffix(f.name)] = f
    return files


def read_ground_truth(label_file: Path) -> CaseBoxes:
    """Boxes and classes of the objects of one instance map (ids missing from the map are skipped)."""
    json_file = label_json_path(label_file)
    try:
        instance_map, classes = read_label(label_file, json_file)
    except ReadError as err:
        raise EvaluationError(str(err)) from None
    found = boxes_from_instance_map(instance_map)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise EvaluationError(f"{json_file}: instance ids {unknown} of {label_file.name} have no class; "
                              "add them to \"instances\"")
    ids = sorted(found)
    dim = instance_map.ndim
    boxes = np.array([found[i] for i in ids], dtype=np.float64).reshape(len(ids), 2 * dim)
    return CaseBoxes(boxes, np.array([classes[i] for i in ids], dtype=np.int64))


def load_ground_truth(label_dir: str | os.PathLike, cases: Sequence[str] | None = None) -> dict[str, CaseBoxes]:
    """Ground truth of every labelled case in ``label_dir`` (or only ``cases``), sorted by case name."""
    files = label_files(label_dir)
    if cases is not None:
        missing = sorted(set(cases) - set(files))
        if missing:
            raise EvaluationError(f"{label_dir}: no label for case(s) {', '.join(missing[:5])}"
                                  f"{' ...' if len(missing) > 5 else ''}")
        files = {c: files[c] for c in sorted(cases)}
    if not files:
        raise EvaluationError(f"{label_dir}: no label images found")
    return {case: read_ground_truth(f) for case, f in tqdm(files.items(), desc="labels", leave=False,
                                                           disable=hidden(len(files) < 20))}


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_prediction(path: Path, dim: int) -> CaseBoxes:
    """Boxes of one prediction JSON; raises EvaluationError naming the file on malformed content."""
    try:
        data = read_json(path)
    except ReadError as err:
        raise EvaluationError(str(err)) from None
    entries = data.get("boxes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise EvaluationError(f"{path}: expected {{\"boxes\": [{{\"box\": [...], \"score\": s, \"class\": c}}]}}")
    boxes, scores, labels = [], [], []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(key in entry for key in ("box", "score", "class")):
            raise EvaluationError(f"{path}: box entry {k} needs \"box\" (list), \"score\" and \"class\"")
        box, score, cls = entry["box"], entry["score"], entry["class"]
        if not isinstance(box, list) or not all(_finite_number(v) for v in box):
            raise EvaluationError(f"{path}: box entry {k} has box {box!r}; coordinates must be finite numbers")
        if len(box) != 2 * dim:
            raise EvaluationError(f"{path}: box entry {k} has {len(box)} coordinates, the labels are {dim}D "
                                  f"(need {2 * dim}); is this the right prediction folder?")
        if any(hi < lo for lo, hi in zip(box[:dim], box[dim:])):
            raise EvaluationError(f"{path}: box entry {k} is inverted ({box}); boxes are [min..., max...]")
        if not _finite_number(score):
            raise EvaluationError(f"{path}: box entry {k} has score {score!r}; scores must be finite numbers")
        if not isinstance(cls, int) or isinstance(cls, bool):
            raise EvaluationError(f"{path}: box entry {k} has class {cls!r}; classes are integers from 0")
        if cls < 0:
            raise EvaluationError(f"{path}: box entry {k} has class {cls}; classes count from 0")
        boxes.append([float(v) for v in box])
        scores.append(float(score))
        labels.append(cls)
    return CaseBoxes(np.array(boxes, dtype=np.float64).reshape(len(boxes), 2 * dim),
                     np.array(labels, dtype=np.int64), np.array(scores, dtype=np.float64))


def load_predictions(
    pred_dirs: str | os.PathLike | Sequence[str | os.PathLike], cases: Sequence[str], dim: int,
    warn_missing: bool = True,
) -> dict[str, CaseBoxes]:
    """Predictions of ``cases`` from one or several folders (one JSON per case).

    A case without a prediction file gets no detections (with a warning when ``warn_missing``); a case
    found in two folders is an error (overlapping folds).
    """
    dirs = [Path(pred_dirs)] if isinstance(pred_dirs, (str, os.PathLike)) else [Path(p) for p in pred_dirs]
    found: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            raise EvaluationError(f"{d}: prediction folder not found")
        for case in cases:
            f = d / f"{case}.json"
            if f.is_file():
                if case in found:
                    raise EvaluationError(f"{f}: case {case} is predicted in {found[case].parent} too; "
                                          "each case may be predicted once")
                found[case] = f
    known = set(cases)
    unknown = sorted(f.name for d in dirs for f in d.glob("*.json")
                     if not f.name.startswith(".") and f.stem not in known and f.name != "metrics.json"
                     and not f.name.endswith(".mrk.json"))  # rud_predict's Slicer markups beside each case
    if unknown:
        logger.warning(f"{len(unknown)} prediction file(s) name no labelled case and are not evaluated: "
                       f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; check -p and -l")
    missing = [c for c in cases if c not in found]
    if missing and warn_missing:
        logger.warning(f"{len(missing)} labelled case(s) have no prediction file and count as no detections: "
                       f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return {c: read_prediction(found[c], dim) if c in found else CaseBoxes.empty(dim) for c in cases}
