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

Every row is checked before anything is written: finite numbers, box corners in order (``x0 <= x1``; a
voxel box is half-open, so ``x0 < x1``), positive diameters, a known class. A bad row stops the
conversion with one line naming the file, the row and the fix. Rows of a case without an image, and
objects whose centre lies outside their image, are dropped and listed in the summary. World boxes on a
scan whose axes are oblique to the world axes cover more voxels than the object (the box is taken along
the world axes); the summary warns, and voxel coordinates avoid it.
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
from retinaunet.progress import hidden
from retinaunet.shard import in_shard

__all__ = ["convert_labels", "read_records"]

AXES = "xyz"


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a CSV (header row) or JSON label file, each with a 'case' key."""
    return [r for _, r in _read_rows(path)]


def _read_rows(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) per record: where names the file and the row as a user finds it (``boxes.csv line 3
    (case a)``, ``boxes.json record 2 of case a``)."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: label file not found")
    rows: list[tuple[str, Any]] = []
    if path.suffix.lower() == ".json":
        data = read_json(path)
        if isinstance(data, dict):
            for case, items in data.items():
                if not isinstance(items, list):
                    raise ConvertError(f"{path}: case {case} holds no list of records; give {{case: [records]}}")
                rows += [(f"{path.name} record {k + 1} of case {case}", {**r, "case": case} if isinstance(r, dict)
                          else r) for k, r in enumerate(items)]
        elif isinstance(data, list):
            rows = [(f"{path.name} record {k + 1}", r) for k, r in enumerate(data)]
        else:
            raise ConvertError(f"{path}: expected a list of records or {{case: [records]}}")
    else:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = [(f"{path.name} line {reader.line_num}", r) for r in reader]
    for where, r in rows:
        if not isinstance(r, dict) or "case" not in r:
            raise ConvertError(f"{where}: no 'case'; each record names its image's case")
    return [(where if " of case " in where else f"{where} (case {r['case']})", r) for where, r in rows]


def _number(record: dict[str, Any], key: str, where: str) -> float:
    """A finite number from ``record[key]``; ConvertError naming the row and the fix otherwise."""
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConvertError(f"{where}: no '{key}'; give it a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConvertError(f"{where}: '{key}' is {value!r}, not a number; give it a number") from None
    if not np.isfinite(number):
        raise ConvertError(f"{where}: '{key}' is {value}, not a finite number; give a finite number or "
                           "remove the row")
    return number


def _class_index(label: str, names: list[str], where: str) -> int:
    """The class of a record's ``class`` (a name of ``names`` or a number counted from 0)."""
    if label in names:
        return names.index(label)
    if label.lstrip("-").isdigit() and 0 <= int(label) < len(names):
        return int(label)
    if label.lstrip("-").isdigit() and int(label) < 0:
        raise ConvertError(f"{where}: class {label}; classes count from 0, give 0 .. {len(names) - 1} or a name")
    raise ConvertError(f"{where}: class '{label}' is not among the classes ({', '.join(names)}); add it to "
                       "--classes or fix the row")


def _check_row(kind: str, r: dict[str, Any], dim: int, voxel: bool, where: str) -> None:
    """Every number of a record finite, box corners in order, diameters positive; ConvertError otherwise."""
    axes = AXES[:dim]
    if kind == "boxes":
        for a in axes:
            lo, hi = _number(r, f"{a}0", where), _number(r, f"{a}1", where)
            if hi < lo:
                raise ConvertError(f"{where}: '{a}1' ({hi:g}) < '{a}0' ({lo:g}); give the corners in order "
                                   f"({a}0 <= {a}1, the lower corner first)")
            if voxel and hi == lo:
                raise ConvertError(f"{where}: '{a}1' = '{a}0' ({lo:g}), an empty box; voxel boxes are half-open "
                                   f"(a one-voxel box spans {a}0 to {a}0 + 1)")
        return
    for a in axes:
        _number(r, a, where)
    for key in _diameter_keys(r, dim):
        try:
            d = float(r.get(key))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            d = _number(r, key, where)  # raises, naming what is there
        if not (np.isfinite(d) and d > 0):
            raise ConvertError(f"{where}: '{key}' is {r.get(key)}; give a positive diameter in mm")


def _diameter_keys(r: dict[str, Any], dim: int) -> list[str]:
    """``diameter_x, diameter_y, (diameter_z)`` when the record gives them all, else ``diameter``."""
    keys = [f"diameter_{a}" for a in AXES[:dim]]
    return keys if all(r.get(k) not in ("", None) for k in keys) else ["diameter"]


def _oblique(direction: Sequence[float]) -> bool:
    """True when no permutation of the image axes runs along the world axes (a box along the world axes
    is then no box of voxels)."""
    d = np.abs(np.asarray(direction, dtype=np.float64))
    return bool(np.any((d > 1e-6) & (d < 1 - 1e-6)))


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
    rows = _read_rows(labels_file)
    names = _classes([r for _, r in rows], class_names)
    dim = read_header(next(iter(probe.values()))[0])[0].dim
    checked = []  # every row before anything is written: a bad row stops the conversion, naming the row
    for where, r in rows:
        _check_row(kind, r, dim, coords == "voxel", where)
        checked.append((where, r, _class_index(str(r.get("class", 0)), names, where)))
    writer = TaskWriter(task_dir, names, list(modalities or ["image"]), dim=dim,
                        extra={"seg_supervision": False}).start()
    taken: set[str] = set()
    ids = {c: case_id(c, taken) for c in sorted(probe)}
    writer.write_case_names({cid: c for c, cid in ids.items()})
    by_case: dict[str, list[tuple[str, dict[str, Any], int]]] = defaultdict(list)
    for where, r, cls in checked:
        case = str(r["case"])
        if case not in probe:
            writer.summary.drop(where, "no image of this case")
            continue
        by_case[case].append((where, r, cls))
    shard_ids = in_shard(ids.values(), shard)
    mine = [c for c in sorted(probe) if ids[c] in shard_ids]
    if kind == "boxes" and coords == "world":
        oblique = [c for c in mine if by_case.get(c) and _oblique(read_header(probe[c][0])[0].direction)]
        if oblique:
            writer.summary.warn(f"world boxes on {len(oblique)} scan(s) whose axes are oblique to the world axes "
                                f"(e.g. {', '.join(oblique[:3])}): a box along the world axes covers more voxels "
                                "than the object there; give voxel coordinates (--coords voxel) for exact boxes")
    for case in tqdm(mine, desc=kind, unit="case", disable=hidden(not progress)):
        cid = ids[case]
        if writer.is_done(cid):
            writer.skip(cid)
            continue
        images = [read_image(f) for f in probe[case]]
        geometry = images[0][1]
        instances = np.zeros(geometry.shape, dtype=np.uint16)
        classes: dict[int, int] = {}
        for where, r, cls in by_case.get(case, []):
            value = len(classes) + 1
            painted = _paint_record(kind, r, instances, geometry, value, coords == "world")
            if painted is None:
                writer.summary.drop(where, "outside the image")
                continue
            if painted == 0:
                writer.summary.drop(where, "covered by an earlier object")
                continue
            classes[value] = cls
        writer.write_case(cid, [a for a, _ in images], geometry, instances, classes)
    return writer.summary


def _paint_record(kind: str, r: dict[str, Any], instances: np.ndarray, geometry, value: int,
                  world: bool) -> int | None:
    """Paint one checked record; None when its centre lies outside the image, else the voxels painted."""
    dim = geometry.dim
    axes = AXES[:dim]
    where = str(r["case"])
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
    diam = np.broadcast_to([_number(r, k, where) for k in _diameter_keys(r, dim)], (dim,)).astype(np.float64)
    if world:
        if not world_centre_inside(geometry, centre):
            return None
        return paint_ellipsoid(instances, geometry, centre, diam / 2, value, world=True)
    idx = np.asarray(centre)[::-1]
    if not world_centre_inside(geometry, idx, world=False):
        return None
    radii_vox = (diam[::-1] / 2) / np.asarray(geometry.spacing)
    return paint_ellipsoid(instances, geometry, idx, radii_vox, value, world=False)
