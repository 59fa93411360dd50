"""``rud_convert dicom SOURCE --labels LABELS``: DICOM series plus their labels -> a task in the raw layout.

Every series below SOURCE (any structure; checked and read as by ``rud_predict``,
:mod:`retinaunet.dicom_series`) is one case, named by its SeriesInstanceUID (dots -> ``_``; the uid is
kept in ``case_names.json``). A refused series is dropped with its one-line reason. The labels are either

- a folder of DICOM SEG objects (it may be SOURCE itself): a SEG labels the series it references; every
  connected component (26-neighbourhood) of a segment is one object whose class is the segment's
  segmented property type (e.g. "Nodule"), classes in ``--classes`` order or sorted by name. Series
  without a SEG are dropped ("no SEG references it"); or
- a boxes or points table (CSV or JSON) as ``rud_convert boxes`` / ``points`` read it, with the series
  uid in its ``case`` column; boxes when the records have ``x0``, points otherwise.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from retinaunet.convert.writer import ConvertError, Summary, TaskWriter, case_id
from retinaunet.dicom_series import DicomSeries, find_series, require
from retinaunet.io import write_image
from retinaunet.progress import hidden
from retinaunet.shard import in_shard

__all__ = ["convert_dicom"]


def convert_dicom(source: str | os.PathLike, labels: str | os.PathLike, task_dir: str | os.PathLike,
                  coords: str = "world", class_names: Sequence[str] | None = None, shard: tuple[int, int] = (0, 1),
                  progress: bool = True) -> Summary:
    """Convert the DICOM series of ``source`` with ``labels`` (a SEG folder or a boxes/points table)."""
    source, labels = Path(source), Path(labels)
    scan = find_series(source)
    if labels.is_dir():
        return _convert_segs(scan.series, scan.refused, labels, task_dir, class_names, shard, progress)
    if not labels.is_file():
        raise ConvertError(f"{labels}: label file or SEG folder not found")
    return _convert_table(scan.series, scan.refused, labels, task_dir, coords, class_names, shard, progress)


def _convert_table(series: list[DicomSeries], refused: list[str], table: Path, task_dir, coords, class_names,
                   shard, progress) -> Summary:
    from retinaunet.convert.labels import convert_labels, read_records

    records = read_records(table)
    kind = "boxes" if records and "x0" in records[0] else "points"
    with tempfile.TemporaryDirectory(prefix="rud_dicom_") as tmp:
        for s in tqdm(series, desc="reading DICOM series", unit="series", disable=hidden(not progress)):
            write_image(s.read(), s.geometry, Path(tmp) / f"{s.uid}_0000.mha")
        modality = series[0].modality if series else "image"
        summary = convert_labels(kind, tmp, table, task_dir, coords, class_names, [modality or "image"],
                                 shard=shard, progress=progress)
    for line in refused:
        summary.drop(line.split(":", 1)[0], line.split(":", 1)[1].strip() if ":" in line else line)
    return summary


def _seg_files(folder: Path) -> dict[str, list[Path]]:
    """{referenced series uid: SEG files} of the SEG objects below ``folder``."""
    pydicom = require()
    out: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if getattr(ds, "Modality", "") != "SEG":
            continue
        refs = getattr(ds, "ReferencedSeriesSequence", None)
        if not refs:
            raise ConvertError(f"{path}: SEG without ReferencedSeriesSequence; it does not say which series it labels")
        out.setdefault(str(refs[0].SeriesInstanceUID), []).append(path)
    return out


def _segment_classes(seg) -> dict[int, str]:
    return {int(d.SegmentNumber): str(d.SegmentedPropertyTypeCodeSequence[0].CodeMeaning)
            for d in seg.SegmentSequence}


def _convert_segs(series: list[DicomSeries], refused: list[str], folder: Path, task_dir, class_names, shard,
                  progress) -> Summary:
    hd = require("highdicom")
    segs = _seg_files(folder)
    if not segs:
        raise ConvertError(f"{folder}: no DICOM SEG objects found; give the SEG folder or a boxes/points table")
    labelled = [s for s in series if s.uid in segs]
    for uid, files in segs.items():
        if len(files) > 1:
            raise ConvertError(f"{files[1]}: a second SEG of series {uid} (first: {files[0]}); keep one per series")
    read = {s.uid: hd.seg.segread(segs[s.uid][0]) for s in labelled}
    found = sorted({name for seg in read.values() for name in _segment_classes(seg).values()})
    names = list(class_names) if class_names else found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ConvertError(f"segment types {unknown} are not in --classes {names}; add them")
    modality = labelled[0].modality if labelled else "image"
    writer = TaskWriter(task_dir, names, [modality or "image"], dim=3).start()
    taken: set[str] = set()
    ids = {s.uid: case_id(s.uid, taken) for s in series}
    writer.write_case_names({ids[s.uid]: s.uid for s in labelled})
    for s in series:
        if s.uid not in segs:
            writer.summary.drop(f"series {s.uid}", "no SEG references it")
    for line in refused:
        writer.summary.drop(line.split(":", 1)[0], line.split(":", 1)[1].strip() if ":" in line else line)
    mine = in_shard([ids[s.uid] for s in labelled], shard)
    todo = [s for s in labelled if ids[s.uid] in mine]
    for s in tqdm(todo, desc="dicom", unit="series", disable=hidden(not progress)):
        cid = ids[s.uid]
        if writer.is_done(cid):
            writer.skip(cid)
            continue
        seg = read[s.uid]
        sop_uids = [str(h.SOPInstanceUID) for h in s.headers()]
        classes_of = _segment_classes(seg)
        numbers = sorted(classes_of)
        masks = seg.get_pixels_by_source_instance(sop_uids, segment_numbers=numbers, combine_segments=False)
        instances = np.zeros(s.geometry.shape, dtype=np.uint16)
        classes: dict[int, int] = {}
        for k, number in enumerate(numbers):
            components, count = ndimage.label(masks[..., k] > 0, structure=np.ones((3, 3, 3)))
            for c in range(1, count + 1):
                value = len(classes) + 1
                free = (components == c) & (instances == 0)
                if not free.any():
                    writer.summary.drop(f"series {s.uid} segment {number}", "covered by an earlier object")
                    continue
                instances[free] = value
                classes[value] = names.index(classes_of[number])
        writer.write_case(cid, [s.read()], s.geometry, instances, classes)
    return writer.summary
