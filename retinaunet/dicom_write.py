"""A volume -> a DICOM series (one CT / MR slice per file), e.g. to export a toy task or test cases as DICOM.

The slices carry the volume's geometry exactly as :mod:`retinaunet.dicom_series` reads it back:
ImageOrientationPatient from the direction matrix's first two columns, ImagePositionPatient of slice z
= origin + z * spacing_z * normal, PixelSpacing (row, column). Voxels are stored as int16 with one
RescaleSlope / RescaleIntercept for the series: integer volumes that fit int16 exactly (slope 1), others
quantised to 16 bits over their range.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retinaunet.dicom_series import require
from retinaunet.io import Geometry, atomic_path

__all__ = ["SeriesInfo", "write_series"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass
class SeriesInfo:
    """Who and what a written series is about; uids are generated when None."""

    patient_id: str = "anonymous"
    patient_name: str = "Anonymous^"
    study_uid: str | None = None
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    series_description: str = ""
    modality: str = "CT"
    series_number: int = 1


def _rescale(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 stored values and (slope, intercept) with ``stored * slope + intercept ~ volume``."""
    lo, hi = float(volume.min()), float(volume.max())
    if np.array_equal(volume, np.round(volume)) and lo >= -32768 and hi <= 32767:
        return volume.astype(np.int16), 1.0, 0.0
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.round((volume - lo) / slope) - 32768
    return np.clip(stored, -32768, 32767).astype(np.int16), slope, lo + 32768 * slope


def write_series(volume: np.ndarray, geometry: Geometry, folder: str | os.PathLike,
                 info: SeriesInfo | None = None) -> list[Path]:
    """Write ``volume[Z, Y, X]`` as ``folder/slice_0000.dcm`` ...; returns the files in slice order."""
    pydicom = require()
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    info = info or SeriesInfo()
    volume = np.asarray(volume)
    if volume.ndim != 3 or geometry.dim != 3:
        raise ValueError(f"write_series needs a 3D volume, got shape {volume.shape}")
    study = info.study_uid or generate_uid()
    series = info.series_uid or generate_uid()
    frame = info.frame_of_reference_uid or generate_uid()
    sop_class = MR_IMAGE_STORAGE if info.modality == "MR" else CT_IMAGE_STORAGE
    stored, slope, intercept = _rescale(volume.astype(np.float64))
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    row, col, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    dz, dy, dx = geometry.spacing
    now = datetime.datetime.now()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for z in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{z:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName = info.patient_id, info.patient_name
        ds.PatientBirthDate, ds.PatientSex = "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = info.modality, info.series_number, z + 1
        ds.SeriesDescription = info.series_description
        ds.Manufacturer = "retinaunet-detection"
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in np.asarray(geometry.origin) + z * dz * normal]
        ds.SliceLocation = f"{float(np.dot(np.asarray(geometry.origin) + z * dz * normal, normal)):.10g}"
        ds.PixelSpacing = [f"{dy:.10g}", f"{dx:.10g}"]
        ds.SliceThickness = f"{dz:.10g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
        if info.modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = ""
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
            ds.EchoTrainLength = ""
        ds.PixelData = np.ascontiguousarray(stored[z]).tobytes()
        with atomic_path(path) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        files.append(path)
    return files
