"""DICOM outputs of a case predicted from a DICOM series: a Segmentation (SEG) and a Structured Report (SR).

Both reference the source series (its study, frame of reference and slices), so a PACS files them with
the study. They hold the findings of the prediction JSON whose score reaches the run's operating point,
in the JSON's order; finding k carries the tracking id ``finding <k+1>`` and one tracking uid in both.

- ``<case>.seg.dcm``: a binary SEG with one segment per finding (label ``<class> <score>``): the voxels
  whose centres lie in the box (at least the voxel at its centre), the rule of ``--save-boxes``. Only
  frames that hold some box are stored. No SEG is written when no finding reaches the operating point
  (a SEG needs a segment).
- ``<case>.sr.dcm``: a Comprehensive 3D SR holding a TID 1500 measurement report with one volumetric
  ROI group (TID 1411) per finding: the box as an ELLIPSOID in the frame of reference (its three axes
  along the image axes, their end points at the box faces, so the centre is the box centre and the axes'
  lengths are its extent in mm), the class as the finding type (coding scheme ``99RUD``, value
  ``class<k>``), and measurements: the extent along the image's x, y and z axes (mm) and the score
  (DCM "Probability", no units). A series without a finding at the operating point gets an SR too (the
  algorithm ran and found nothing there): TID 1500 needs one group, so it holds a single series-level group
  (TID 1501, tracking id ``no finding``) with one measurement, ``findings`` (``99RUD``) = 0.

highdicom and pydicom are optional dependencies (``pip install -e ".[dicom]"``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retinaunet.dicom_series import DicomSeries, require
from retinaunet.io import Geometry, atomic_path

__all__ = ["PRIVATE_SCHEME", "SEG_SUFFIX", "SR_SUFFIX", "box_voxel_range", "dicom_findings", "write_case_seg",
           "write_case_sr"]

SEG_SUFFIX, SR_SUFFIX = ".seg.dcm", ".sr.dcm"
PRIVATE_SCHEME = "99RUD"  # the codes this project defines (a private coding scheme: 99 prefix)
SOFTWARE = "retinaunet-detection"
EXTENT_CODES = {axis: (f"extent-{axis}", f"Extent along image {axis} axis") for axis in "xyz"}
FINDINGS_CODE, FINDINGS_MEANING = ("findings",), "Findings at or above the operating point"


def dicom_findings(doc: dict[str, Any], operating_point: float) -> list[dict[str, Any]]:
    """The JSON's box entries that go into the SEG and SR: score >= ``operating_point``, in order."""
    return [entry for entry in doc["boxes"] if float(entry["score"]) >= operating_point]


def box_voxel_range(box: Sequence[float], shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index range ``[lo, hi)`` per array axis of the voxels whose centres lie in a half-open box
    (at least the voxel holding the box centre), clipped to ``shape``."""
    dim = len(shape)
    box = np.asarray(box, dtype=np.float64)
    lo, hi = np.ceil(box[:dim] - 0.5).astype(np.int64), np.ceil(box[dim:] - 0.5).astype(np.int64)
    centre = np.floor((box[:dim] + box[dim:]) / 2).astype(np.int64)
    lo, hi = np.where(hi > lo, lo, centre), np.where(hi > lo, hi, centre + 1)
    return np.clip(lo, 0, np.asarray(shape) - 1), np.clip(hi, 1, shape)


def _label(entry: dict[str, Any]) -> str:
    return f"{entry.get('class_name') or entry['class']} {entry['score']:.2f}"[:64]


def _uids(findings: list[dict[str, Any]]) -> list[str]:
    from pydicom.uid import generate_uid

    return [entry.get("tracking_uid") or generate_uid() for entry in findings]


def _algorithm(hd):
    return hd.AlgorithmIdentificationSequence(name=SOFTWARE, version=_version(),
                                              family=require("pydicom.sr.codedict").codes.DCM.ArtificialIntelligence)


def write_case_seg(doc: dict[str, Any], series: DicomSeries, path: str | os.PathLike, operating_point: float,
                   tracking_uids: Sequence[str] | None = None) -> Path | None:
    """Write the SEG of one case (see the module's docstring); None when no finding reaches the point."""
    hd = require("highdicom")
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    findings = dicom_findings(doc, operating_point)
    if not findings:
        return None
    shape = series.geometry.shape
    ranges = [box_voxel_range(entry["box"], shape) for entry in findings]
    frames = sorted({z for lo, hi in ranges for z in range(int(lo[0]), int(hi[0]))})
    at = {z: k for k, z in enumerate(frames)}
    masks = np.zeros((len(frames), shape[1], shape[2], len(findings)), dtype=bool)
    for s, (lo, hi) in enumerate(ranges):
        for z in range(int(lo[0]), int(hi[0])):
            masks[at[z], lo[1]:hi[1], lo[2]:hi[2], s] = True
    headers = series.headers()
    uids = list(tracking_uids) if tracking_uids is not None else _uids(findings)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s + 1, segment_label=_label(entry),
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=_algorithm(hd),
            tracking_id=f"finding {s + 1}", tracking_uid=uids[s])
        for s, entry in enumerate(findings)]
    positions = [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT,
                                          [float(v) for v in headers[z].ImagePositionPatient]) for z in frames]
    seg = hd.seg.Segmentation(
        source_images=headers, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=9901,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=SOFTWARE,
        manufacturer_model_name="Retina U-Net", software_versions=_version(), device_serial_number="0",
        plane_positions=positions, series_description=f"{SOFTWARE} boxes >= {operating_point:g}"[:64])
    return _save(seg, path)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SOFTWARE)
    except PackageNotFoundError:
        return "unknown"


def _save(dataset, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return path


def ellipsoid_points(entry: dict[str, Any], geometry: Geometry) -> np.ndarray:
    """``float[6, 3]``: end points (x, y, z mm) of the box's three axes, longest axis first (DICOM's order
    for an ELLIPSOID), each axis along an image axis and ending at the box faces."""
    centre = np.asarray(entry["center_world"], dtype=np.float64)
    axes = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3).T  # row i: direction of index x, y, z
    half = np.asarray(entry["size_mm"], dtype=np.float64)[::-1] / 2  # size_mm is array order (z, y, x)
    order = np.argsort(-half, kind="stable")
    return np.concatenate([[centre - half[i] * axes[i], centre + half[i] * axes[i]] for i in order])


def write_case_sr(doc: dict[str, Any], series: DicomSeries, path: str | os.PathLike, operating_point: float,
                  class_names: Sequence[str] | None = None, tracking_uids: Sequence[str] | None = None) -> Path:
    """Write the SR of one case (see the module's docstring), also when it holds no finding."""
    hd = require("highdicom")
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    findings = dicom_findings(doc, operating_point)
    uids = list(tracking_uids) if tracking_uids is not None else _uids(findings)
    headers = series.headers()
    algorithm = hd.sr.AlgorithmIdentification(name=SOFTWARE, version=_version())
    source_series = hd.sr.SourceSeriesForSegmentation(series.uid)
    groups = []
    for k, entry in enumerate(findings):
        name = entry.get("class_name") or (class_names[entry["class"]] if class_names else f"class {entry['class']}")
        extents = dict(zip("xyz", reversed(entry["size_mm"])))
        measurements = [hd.sr.Measurement(name=hd.sr.CodedConcept(*EXTENT_CODES[a][:1], PRIVATE_SCHEME,
                                                                  EXTENT_CODES[a][1]),
                                          value=float(extents[a]), unit=codes.UCUM.Millimeter, algorithm_id=algorithm)
                        for a in "xyz"]
        measurements.append(hd.sr.Measurement(name=codes.DCM.Probability, value=float(entry["score"]),
                                              unit=codes.UCUM.NoUnits, algorithm_id=algorithm))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uids[k], identifier=f"finding {k + 1}"),
            referenced_volume_surface=hd.sr.VolumeSurface(
                graphic_type=hd.sr.GraphicTypeValues3D.ELLIPSOID,
                graphic_data=ellipsoid_points(entry, series.geometry),
                frame_of_reference_uid=series.frame_of_reference_uid, source_series=source_series),
            finding_type=hd.sr.CodedConcept(f"class{int(entry['class'])}", PRIVATE_SCHEME, str(name)[:64]),
            algorithm_id=algorithm, measurements=measurements))
    if not groups:  # TID 1500 needs a group: one for the whole series, saying that no finding reached the point
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="no finding"),
            algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(name=hd.sr.CodedConcept(*FINDINGS_CODE, PRIVATE_SCHEME, FINDINGS_MEANING),
                                            value=0, unit=hd.sr.CodedConcept("{findings}", "UCUM", "findings"),
                                            algorithm_id=algorithm)]))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=generate_uid(), name=SOFTWARE))
    procedure = codes.LN.CTUnspecifiedBodyRegion if series.modality == "CT" else codes.SCT.ImagingProcedure
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_device_context=observer),
                                     procedure_reported=procedure, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=headers, content=report, series_instance_uid=generate_uid(), series_number=9902,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=SOFTWARE,
        series_description=f"{SOFTWARE} findings >= {operating_point:g}"[:64])
    return _save(sr, path)


def write_case_dicom(doc: dict[str, Any], series: DicomSeries, out_dir: str | os.PathLike, operating_point: float,
                     class_names: Sequence[str] | None = None) -> list[Path]:
    """The SEG (when a finding reaches the operating point) and the SR of one case, sharing tracking uids."""
    out_dir = Path(out_dir)
    uids = _uids(dicom_findings(doc, operating_point))
    written = []
    seg = write_case_seg(doc, series, out_dir / f"{doc['case']}{SEG_SUFFIX}", operating_point, uids)
    if seg is not None:
        written.append(seg)
    written.append(write_case_sr(doc, series, out_dir / f"{doc['case']}{SR_SUFFIX}", operating_point, class_names,
                                 uids))
    return written
