"""LUNA16 -> the raw layout: one class of spherical nodules, the ten subsets as ten folds.

Source (as downloaded from the challenge): ``subset0`` .. ``subset9`` folders of ``<seriesuid>.mhd`` +
``.raw`` scans (nested folders are searched too) and ``annotations.csv`` with the columns seriesuid,
coordX, coordY, coordZ (world mm, the scan's physical space) and diameter_mm. Each annotation becomes a
sphere of its diameter around its centre, painted on the voxels whose centres lie inside (exact for
scans with a rotated direction matrix). Scans without annotations are written with an empty map.

Seriesuids contain dots, which case ids may not: the ids replace them by ``_`` and ``case_names.json``
maps them back. ``splits.json`` holds ten folds: fold k tests on subset k, validates on subset k+1
(mod 10) and trains on the other eight, as in the challenge's ten-fold protocol.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retinaunet.convert.shapes import paint_ellipsoid, world_centre_inside
from retinaunet.convert.writer import ConvertError, Summary, TaskWriter, case_id
from retinaunet.io import read_image, write_json
from retinaunet.progress import hidden
from retinaunet.shard import in_shard

__all__ = ["LunaNodule", "convert_luna16", "find_luna_scans", "luna_splits", "read_luna_csv"]

SUBSET = re.compile(r"^subset(\d+)$")
LUNA_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


@dataclass(frozen=True)
class LunaNodule:
    """One row of a LUNA16 annotation file: world centre (x, y, z) mm and diameter mm (-1: unknown)."""

    seriesuid: str
    centre: tuple[float, float, float]
    diameter: float


def read_luna_csv(path: str | os.PathLike, need_diameter: bool = True) -> list[LunaNodule]:
    """Rows of ``annotations.csv`` / ``annotations_excluded.csv`` (header names as the challenge's)."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: annotation file not found")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = LUNA_COLUMNS if need_diameter else LUNA_COLUMNS[:4]
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise ConvertError(f"{path}: missing column(s) {', '.join(missing)}; expected a header "
                               f"{','.join(LUNA_COLUMNS)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                centre = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
                diameter = float(row.get("diameter_mm") or -1)
            except (TypeError, ValueError):
                raise ConvertError(f"{path}: line {line} has a coordinate or diameter that is not a number") \
                    from None
            if not all(math.isfinite(v) for v in (*centre, diameter)):
                raise ConvertError(f"{path}: line {line} has a coordinate or diameter that is not finite "
                                   f"({', '.join(str(v) for v in (*centre, diameter))}); fix or remove the row")
            rows.append(LunaNodule(row["seriesuid"].strip(), centre, diameter))
    return rows


def find_luna_scans(source: str | os.PathLike) -> dict[str, tuple[int, Path]]:
    """{seriesuid: (subset number, .mhd file)} of every ``subsetN`` folder under ``source``."""
    source = Path(source)
    if not source.is_dir():
        raise ConvertError(f"{source}: LUNA16 folder not found")
    scans: dict[str, tuple[int, Path]] = {}
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and SUBSET.match(p.name)):
        subset = int(SUBSET.match(folder.name).group(1))
        for mhd in sorted(folder.rglob("*.mhd")):
            uid = mhd.stem
            if uid in scans:
                raise ConvertError(f"{mhd}: scan {uid} is also in {scans[uid][1].parent}; remove one copy")
            scans[uid] = (subset, mhd)
    if not scans:
        raise ConvertError(f"{source}: no subset0..subset9 folders with .mhd scans; point at the folder that "
                           "holds the unpacked subsets and annotations.csv")
    return scans


def luna_splits(case_subsets: dict[str, int]) -> list[dict[str, list[str]]]:
    """One fold per subset: test = subset k, val = the next subset, train = the rest."""
    subsets = sorted(set(case_subsets.values()))
    by_subset = defaultdict(list)
    for case, s in case_subsets.items():
        by_subset[s].append(case)
    folds = []
    for k, s in enumerate(subsets):
        v = subsets[(k + 1) % len(subsets)]
        train = [c for t in subsets if t not in (s, v) for c in by_subset[t]]
        folds.append({"train": sorted(train), "val": sorted(by_subset[v]), "test": sorted(by_subset[s])})
    return folds


def convert_luna16(source: str | os.PathLike, task_dir: str | os.PathLike, annotations: str | os.PathLike | None = None,
                   shard: tuple[int, int] = (0, 1), progress: bool = True) -> Summary:
    """Convert a LUNA16 download into ``task_dir`` (resumable; see the module docstring)."""
    source = Path(source)
    scans = find_luna_scans(source)
    nodules = read_luna_csv(annotations or source / "annotations.csv")
    writer = TaskWriter(task_dir, ["nodule"], ["CT"], dim=3).start()
    taken: set[str] = set()
    ids = {uid: case_id(uid, taken) for uid in sorted(scans)}
    writer.write_case_names({cid: uid for uid, cid in ids.items()})
    subsets = {ids[uid]: subset for uid, (subset, _) in scans.items()}
    if len(set(subsets.values())) >= 3:
        write_json(luna_splits(subsets), writer.paths.splits)
    by_scan = defaultdict(list)
    for n in nodules:
        if n.seriesuid not in scans:
            writer.summary.drop(f"{n.seriesuid} {n.centre}", "annotation of a scan not in the subsets")
            continue
        by_scan[n.seriesuid].append(n)
    mine = in_shard(ids.values(), shard)
    todo = [uid for uid in sorted(scans) if ids[uid] in mine]
    for uid in tqdm(todo, desc="luna16", unit="scan", disable=hidden(not progress)):
        cid = ids[uid]
        if writer.is_done(cid):
            writer.skip(cid)
            continue
        image, geometry = read_image(scans[uid][1])
        instances = np.zeros(geometry.shape, dtype=np.uint16)
        classes: dict[int, int] = {}
        for n in by_scan.get(uid, []):
            if n.diameter <= 0:
                writer.summary.drop(f"{uid} {n.centre}", "diameter missing or not positive")
                continue
            if not world_centre_inside(geometry, n.centre):
                writer.summary.drop(f"{uid} {n.centre}", "centre outside the scan")
                continue
            value = len(classes) + 1
            if paint_ellipsoid(instances, geometry, n.centre, n.diameter / 2, value) == 0:
                writer.summary.drop(f"{uid} {n.centre}", "lies entirely inside an earlier nodule")
                continue
            classes[value] = 0
        writer.write_case(cid, [image], geometry, instances, classes)
    return writer.summary
