"""Labels given as boxes or as points with diameters -> instance maps (filled boxes / ellipsoids).

Source: a folder of images (``<case>_0000.nii.gz`` one file per modality, or ``<case>.nii.gz``; any
format SimpleITK reads) and one label file for the dataset, CSV or JSON, one record per object:

- ``case``: the image's case name; ``class``: a class name or a number counted from 0;
- boxes: ``x0, y0, (z0), x1, y1, (z1)``; points: ``x, y, (z)`` and ``diameter`` (mm), or
  ``diameter_x, diameter_y, (diameter_z)`` for an ellipsoid.

Coordinates are ``world`` (mm in the image's physical space, as SimpleITK and LUNA16 give them) or
``voxel`` (indices along x, y, z = SimpleITK's index order, the reverse of the array order). In the
voxel frame boxes are half-open (voxel i spans [i, i+1)) and a point sits at the centre of voxel i when
its coordinate is i; diameters are always mm. JSON holds a list of such records or {case: [records]}.
Images without records become cases without objects. Such label maps outline boxes, not organs, so the
task is marked ``"seg_supervision": false`` and the planner switches the segmentation loss off.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from retinaunet.convert.seg2det import _cases
from retinaunet.convert.shapes import paint_box, paint_ellipsoid, world_centre_inside
from retinaunet.convert.writer import ConvertError, Summary, TaskWriter, case_id
from retinaunet.io import read_header, read_image, read_json
from retinaunet.shard import in_shard

__all__ = ["convert_labels", "read_records"]

AXES = "xyz"


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a CSV (header row) or JSON label file, each with a 'case' key."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: label file not found")
    if path.suffix.lower() == ".json":
        data = read_json(path)
        if isinstance(data, dict):
            records = [{**r, "case": case} for case, rows in data.items() for r in rows]
        elif isinstance(data, list):
            records = list(data)
        else:
            raise ConvertError(f"{path}: expected a list of records or {{case: [records]}}")
    else:
        with open(path, newline="") as fh:
            records = list(csv.DictReader(fh))
    for k, r in enumerate(records):
        if not isinstance(r, dict) or "case" not in r:
            raise ConvertError(f"{path}: record {k} has no 'case'; each record names its image's case")
    return records


def _number(record: dict[str, Any], key: str, where: str) -> float:
    try:
        return float(record[key])
    except (KeyError, TypeError, ValueError):
        raise ConvertError(f"{where}: needs a number in '{key}'") from None


def _classes(records: list[dict[str, Any]], names: Sequence[str] | None) -> list[str]:
    values = [str(r.get("class", 0)) for r in records]
    if names:
        return list(names)
    if all(v.lstrip("-").isdigit() for v in values):
        top = max((int(v) for v in values), default=0)
        return [f"class{k}" for k in range(top + 1)]
    return sorted(set(values))


def convert_labels(kind: str, images_dir: str | os.PathLike, labels_file: str | os.PathLike,
                   task_dir: str | os.PathLike, coords: str = "world", class_names: Sequence[str] | None = None,
                   modalities: Sequence[str] | None = None, shard: tuple[int, int] = (0, 1),
                   progress: bool = True) -> Summary:
    """``kind`` "boxes" or "points": paint the label file's objects onto the images' grids (resumable)."""
    if kind not in ("boxes", "points"):
        raise ValueError(f"kind must be 'boxes' or 'points', got {kind!r}")
    if coords not in ("world", "voxel"):
        raise ValueError(f"coords must be 'world' or 'voxel', got {coords!r}")
    images_dir = Path(images_dir)
    probe = _cases(images_dir, 1 if not modalities else len(modalities)) if images_dir.is_dir() else {}
    if not probe:
        raise ConvertError(f"{images_dir}: no images (<case>_0000.nii.gz or <case>.nii.gz)")
    records = read_records(labels_file)
    names = _classes(records, class_names)
    dim = read_header(next(iter(probe.values()))[0])[0].dim
    writer = TaskWriter(task_dir, names, list(modalities or ["image"]), dim=dim,
                        extra={"seg_supervision": False}).start()
    taken: set[str] = set()
    ids = {c: case_id(c, taken) for c in sorted(probe)}
    writer.write_case_names({cid: c for c, cid in ids.items()})
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for k, r in enumerate(records):
        case = str(r["case"])
        if case not in probe:
            writer.summary.drop(f"{Path(labels_file).name} record {k} ({case})", "no image of this case")
            continue
        by_case[case].append(r)
    mine = in_shard(ids.values(), shard)
    for case in tqdm([c for c in sorted(probe) if ids[c] in mine], desc=kind, unit="case", disable=not progress):
        cid = ids[case]
        if writer.is_done(cid):
            writer.skip(cid)
            continue
        images = [read_image(f) for f in probe[case]]
        geometry = images[0][1]
        instances = np.zeros(geometry.shape, dtype=np.uint16)
        classes: dict[int, int] = {}
        for r in by_case.get(case, []):
            where = f"{Path(labels_file).name}: {case}"
            label = str(r.get("class", 0))
            cls = names.index(label) if label in names else (int(label) if label.lstrip("-").isdigit() else -1)
            if not 0 <= cls < len(names):
                writer.summary.drop(f"{case} class {label}", "class not among the classes")
                continue
            value = len(classes) + 1
            painted = _paint_record(kind, r, instances, geometry, value, coords == "world", where)
            if painted is None:
                writer.summary.drop(f"{case} {kind[:-1]} {value}", "outside the image")
                continue
            if painted == 0:
                writer.summary.drop(f"{case} {kind[:-1]} {value}", "covered by an earlier object")
                continue
            classes[value] = cls
        writer.write_case(cid, [a for a, _ in images], geometry, instances, classes)
    return writer.summary


def _paint_record(kind: str, r: dict[str, Any], instances: np.ndarray, geometry, value: int, world: bool,
                  where: str) -> int | None:
    """Paint one record; None when it lies outside the image, else the voxels painted."""
    dim = geometry.dim
    axes = AXES[:dim]
    if kind == "boxes":
        lo = [_number(r, f"{a}0", where) for a in axes]
        hi = [_number(r, f"{a}1", where) for a in axes]
        if world:
            centre = (np.asarray(lo) + np.asarray(hi)) / 2
            if not world_centre_inside(geometry, centre):
                return None
            return paint_box(instances, geometry, [*lo, *hi], value, world=True)
        box = [*lo[::-1], *hi[::-1]]  # x, y, z -> array order
        centre = (np.asarray(box[:dim]) + np.asarray(box[dim:])) / 2 - 0.5
        if not world_centre_inside(geometry, centre, world=False):
            return None
        return paint_box(instances, geometry, box, value, world=False)
    centre = [_number(r, a, where) for a in axes]
    if all(f"diameter_{a}" in r and r[f"diameter_{a}"] not in ("", None) for a in axes):
        diam = np.asarray([_number(r, f"diameter_{a}", where) for a in axes])
    else:
        diam = np.full(dim, _number(r, "diameter", where))
    if world:
        if not world_centre_inside(geometry, centre):
            return None
        return paint_ellipsoid(instances, geometry, centre, diam / 2, value, world=True)
    idx = np.asarray(centre)[::-1]
    if not world_centre_inside(geometry, idx, world=False):
        return None
    radii_vox = (diam[::-1] / 2) / np.asarray(geometry.spacing)
    return paint_ellipsoid(instances, geometry, idx, radii_vox, value, world=False)
