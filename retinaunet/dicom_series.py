"""DICOM series -> volumes: find every series below a folder, check it lies on one regular grid, read it.

A folder may hold series in any structure (one folder per series, several series mixed in one folder,
nested study folders); files are grouped by SeriesInstanceUID. A series becomes one volume when its
slices share one frame of reference, one orientation, one size and pixel spacing, lie on one line along
the slice normal at equal steps (no missing slice, no two slices at one position), hold one grey
channel each and use a transfer syntax whose decoder is installed. Anything else is refused with one
line that names the series, its folder and the fix (:attr:`DicomScan.refused`); nothing is read of it.

Geometry is SimpleITK's: the array is ``(Z, Y, X)`` with slices sorted by their position along the
normal ``row x column`` of ImageOrientationPatient, the origin is the first slice's
ImagePositionPatient, the direction matrix has the row, column and normal directions as its columns.
Voxel values are the stored values with RescaleSlope / RescaleIntercept applied (Hounsfield units for CT).

pydicom is an optional dependency (``pip install -e ".[dicom]"``); it is imported when first needed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retinaunet.io import Geometry

__all__ = ["DicomError", "DicomScan", "MissingExtraError", "DicomSeries", "find_series", "is_dicom_folder", "require"]

NON_IMAGE_MODALITIES = {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "DOC", "REG", "AU"}
ORIENTATION_TOL = 1e-4  # direction cosines that differ by more are another orientation
STEP_RTOL = 0.1  # a step between slices may differ this much (relative) from the median step
_MAX_PROBE = 2000  # files looked at to decide whether a folder holds DICOM


class DicomError(RuntimeError):
    """A series that cannot be read as one volume; the message names the series and the fix."""


class MissingExtraError(RuntimeError):
    """An optional DICOM library is not installed; the message says how to install it."""


def require(module: str = "pydicom") -> Any:
    """Import an optional DICOM library, or fail with one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: DICOM input and output need the 'dicom' extra; "
                          "run pip install -e \".[dicom]\" (or pip install pydicom highdicom slicerio)") from None


def _read_header(path: Path):
    """A file's DICOM header (no pixel data), or None when it is not a DICOM file."""
    pydicom = require()
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _files(folder: Path) -> Iterable[Path]:
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(root) / name


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    """True when some file below ``folder`` (hidden ones aside) starts like a DICOM file ('DICM' at byte 128)."""
    for k, path in enumerate(_files(Path(folder))):
        if k >= _MAX_PROBE:
            break
        try:
            with open(path, "rb") as fh:
                head = fh.read(132)
        except OSError:
            continue
        if head[128:132] == b"DICM":
            return True
    return False


@dataclass
class DicomSeries:
    """One series that reads as one volume: its slice files in order and where the volume lies."""

    uid: str
    files: list[Path]
    geometry: Geometry
    frame_of_reference_uid: str
    study_uid: str
    modality: str
    folder: Path  # the deepest folder holding all its files, for messages

    def label(self) -> str:
        return f"series {self.uid} ({self.folder})"

    def headers(self) -> list[Any]:
        """The slices' DICOM headers in volume order (no pixel data), e.g. as the source of a SEG or SR."""
        return [_read_header(f) for f in self.files]

    def read(self) -> np.ndarray:
        """The volume, ``float32[Z, Y, X]``, with each slice's rescale slope and intercept applied."""
        pydicom = require()
        out = np.empty(self.geometry.shape, dtype=np.float32)
        for z, path in enumerate(self.files):
            try:
                ds = pydicom.dcmread(path)
                pixels = ds.pixel_array
            except Exception as err:  # a decoder's failure has no common type
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise DicomError(f"{self.label()}: cannot decode {path.name} ({reason}); decompress the series "
                                 "(e.g. gdcmconv --raw) or install its decoder") from None
            if pixels.shape != self.geometry.shape[1:]:
                raise DicomError(f"{self.label()}: {path.name} holds {pixels.shape} pixels, not "
                                 f"{self.geometry.shape[1:]}; export the series again")
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
            out[z] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        return out


@dataclass
class DicomScan:
    """What :func:`find_series` found: the readable series (sorted by uid) and one line per refused one."""

    series: list[DicomSeries] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skipped_files: int = 0  # files that are not DICOM


def find_series(folder: str | os.PathLike) -> DicomScan:
    """Every DICOM series below ``folder``, checked (see the module's docstring); reads headers only."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder not found")
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    scan = DicomScan()
    for path in _files(folder):
        ds = _read_header(path)
        if ds is None:
            scan.skipped_files += 1
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if not uid:
            scan.refused.append(f"{path}: DICOM file without a SeriesInstanceUID; remove it or fix its header")
            continue
        groups[uid].append((path, ds))
    for uid in sorted(groups):
        try:
            scan.series.append(_check_series(uid, groups[uid]))
        except DicomError as err:
            scan.refused.append(str(err))
    return scan


def _common_folder(paths: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _check_series(uid: str, items: list[tuple[Path, Any]]) -> DicomSeries:
    where = f"series {uid} ({_common_folder([p for p, _ in items])})"
    for path, ds in items:
        modality = str(getattr(ds, "Modality", "") or "")
        sop = getattr(ds, "SOPClassUID", None)
        sop_name = getattr(sop, "name", str(sop)) if sop is not None else "unknown"
        if modality in NON_IMAGE_MODALITIES or "Rows" not in ds or "ImagePositionPatient" not in ds:
            raise DicomError(f"{where}: {path.name} is a {sop_name} object ({modality or 'no modality'}), not an "
                             "image slice; nothing to predict in it (move it out of the input folder to silence this)")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise DicomError(f"{where}: {path.name} is a multi-frame image; convert the series to one slice per "
                             "file (e.g. with dcm2niix or emf2sf)")
        if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
            raise DicomError(f"{where}: {path.name} has {ds.SamplesPerPixel} samples per pixel; only grey-value "
                             "images are read")
        for key in ("ImageOrientationPatient", "PixelSpacing"):
            if key not in ds:
                raise DicomError(f"{where}: {path.name} has no {key}; the volume's geometry is unknown")
    _check_decoders(where, items)
    frames = sorted({str(getattr(ds, "FrameOfReferenceUID", "") or "") for _, ds in items})
    if len(frames) > 1:
        raise DicomError(f"{where}: slices in {len(frames)} frames of reference ({', '.join(frames[:2])} ...); the "
                         "folder mixes scans under one series uid, separate them")
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in items])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOL:
        raise DicomError(f"{where}: slices of mixed orientation; the series is not one volume (separate the "
                         "orientations into their own series)")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    spacings = {tuple(round(float(v), 4) for v in ds.PixelSpacing) for _, ds in items}
    if len(sizes) > 1 or len(spacings) > 1:
        raise DicomError(f"{where}: slices of different size or pixel spacing ({sorted(sizes)}, {sorted(spacings)}); "
                         "the series is not one volume")
    if len(items) < 2:
        raise DicomError(f"{where}: only one slice; a volume needs at least two")
    row, col = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row, col)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in items])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    steps = np.diff(along)
    if steps.min() <= 1e-3:
        k = int(np.argmin(steps))
        raise DicomError(f"{where}: two slices at one position ({along[k]:.2f} mm along the normal: "
                         f"{items[order[k]][0].name}, {items[order[k + 1]][0].name}); the folder mixes two scans "
                         "under one series uid, separate them")
    step = float(np.median(steps))
    if np.abs(steps - step).max() > STEP_RTOL * step:
        k = int(np.argmax(np.abs(steps - step)))
        raise DicomError(f"{where}: slice spacing varies from {steps.min():.3g} to {steps.max():.3g} mm (after "
                         f"{items[order[k]][0].name}); missing slices? export the whole series again")
    in_plane = positions - positions[0]
    drift = np.abs(in_plane - np.outer(in_plane @ normal, normal)).max()
    if drift > 0.1 * min(step, *next(iter(spacings))):
        raise DicomError(f"{where}: slices are shifted within their plane along the stack (gantry tilt?); "
                         "resample the series onto a regular grid first")
    rows, cols = next(iter(sizes))
    dy, dx = next(iter(spacings))
    direction = np.stack([row, col, normal], axis=1)  # columns: the directions of index x, y, z
    geometry = Geometry(spacing=(step, float(dy), float(dx)), origin=tuple(float(v) for v in positions[0]),
                        direction=tuple(float(v) for v in direction.ravel()), shape=(len(items), rows, cols))
    first = items[order[0]][1]
    return DicomSeries(uid=uid, files=[items[k][0] for k in order], geometry=geometry,
                       frame_of_reference_uid=frames[0], study_uid=str(getattr(first, "StudyInstanceUID", "")),
                       modality=str(getattr(first, "Modality", "")), folder=_common_folder([p for p, _ in items]))


def _check_decoders(where: str, items: list[tuple[Path, Any]]) -> None:
    """Refuse a transfer syntax whose pixel data no installed decoder reads."""
    from pydicom.pixels import get_decoder

    syntaxes = {str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "") for _, ds in items}
    for ts in sorted(s for s in syntaxes if s):
        uid = require("pydicom.uid").UID(ts)
        if not uid.is_compressed:
            continue
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise DicomError(f"{where}: transfer syntax {uid.name} ({ts}) cannot be decoded by pydicom; decompress "
                             "the series first (e.g. gdcmconv --raw)") from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
            raise DicomError(f"{where}: transfer syntax {uid.name} ({ts}) needs a decoder that is not installed "
                             f"({needs}); install one or decompress the series (gdcmconv --raw)")
