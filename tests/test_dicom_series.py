"""DICOM series in: found in any folder structure, read on SimpleITK's grid, bad series refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from retinaunet.io import Geometry
from tests.dicom_fixtures import toy_geometry, toy_volume, write_dicom_case

pydicom = pytest.importorskip("pydicom")


def test_series_read_back_on_the_written_grid_with_rescale_applied(tmp_path):
    from retinaunet.dicom_series import find_series, is_dicom_folder

    volume = toy_volume() + 0.25  # not integer: stored with a slope and an intercept
    files = write_dicom_case(tmp_path / "a" / "b", volume=volume, series_uid="1.2.3.4")
    files[3].rename(tmp_path / "a" / "zz_moved.dcm")  # file order is not slice order; any structure
    (tmp_path / "a" / "README.txt").write_text("not DICOM")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x_0000.nii.gz").write_bytes(b"\0" * 400)
    assert is_dicom_folder(tmp_path) and not is_dicom_folder(tmp_path / "plain")
    scan = find_series(tmp_path)
    assert scan.refused == [] and scan.skipped_files == 2  # README.txt and the NIfTI-named file
    (series,) = scan.series
    assert series.uid == "1.2.3.4" and series.geometry.same_as(toy_geometry()) is None
    read = series.read()
    assert np.abs(read - volume).max() < 0.02  # 16-bit quantisation of a 1400 HU range
    assert float(pydicom.dcmread(files[0]).RescaleSlope) != 1.0
    # SimpleITK (GDCM) reads the same slices onto the same grid
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    image = reader.Execute()
    assert Geometry.from_image(image).same_as(series.geometry) is None
    assert np.abs(sitk.GetArrayFromImage(image) - read).max() < 1e-3


def test_two_series_in_one_folder_are_two_cases(tmp_path):
    from retinaunet.dicom_series import find_series

    write_dicom_case(tmp_path / "mixed", series_uid="1.2.3.1")
    for f in write_dicom_case(tmp_path / "other", series_uid="1.2.3.2"):
        f.rename(tmp_path / "mixed" / f"b_{f.name}")
    scan = find_series(tmp_path)
    assert [s.uid for s in scan.series] == ["1.2.3.1", "1.2.3.2"] and scan.refused == []
    assert all(len(s.files) == 16 for s in scan.series)


def _refusal(tmp_path, uid):
    from retinaunet.dicom_series import find_series

    scan = find_series(tmp_path)
    lines = [line for line in scan.refused if uid in line]
    assert len(lines) == 1 and "\n" not in lines[0], scan.refused
    assert uid not in [s.uid for s in scan.series]
    return lines[0]


def test_missing_slice_is_refused_by_name(tmp_path):
    files = write_dicom_case(tmp_path / "s", series_uid="1.9.1")
    files[7].unlink()
    assert "missing slices" in _refusal(tmp_path, "1.9.1")


def test_one_uid_over_two_scans_is_refused(tmp_path):
    write_dicom_case(tmp_path / "s", series_uid="1.9.2")
    write_dicom_case(tmp_path / "t", series_uid="1.9.2")  # same uid, same positions, another frame of reference
    line = _refusal(tmp_path, "1.9.2")
    assert "frames of reference" in line or "two slices at one position" in line


def test_mixed_orientation_and_gantry_tilt_are_refused(tmp_path):
    files = write_dicom_case(tmp_path / "s", series_uid="1.9.3", frame_of_reference_uid="1.9.3.0")
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    ds.save_as(files[2])
    assert "mixed orientation" in _refusal(tmp_path, "1.9.3")
    files = write_dicom_case(tmp_path / "u", series_uid="1.9.4")
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 0.5 * k, *ds.ImagePositionPatient[1:]]
        ds.save_as(f)
    assert "gantry tilt" in _refusal(tmp_path, "1.9.4")


def test_non_image_object_is_refused_by_name(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    write_dicom_case(tmp_path / "s", series_uid="1.9.5")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "s" / "report.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality = "1.9.6", "SR"
    ds.save_as(tmp_path / "s" / "report.dcm", enforce_file_format=True)
    line = _refusal(tmp_path, "1.9.6")
    assert "report.dcm" in line and "not an image" in line
    from retinaunet.dicom_series import find_series

    assert [s.uid for s in find_series(tmp_path).series] == ["1.9.5"]  # the images beside it are read


def test_compressed_without_decoder_is_refused_by_name(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    files = write_dicom_case(tmp_path / "s", series_uid="1.9.7")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8 not really a JPEG \xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(f)
    if get_decoder(JPEGLosslessSV1).is_available:  # checked up front; else the decoding fails when read
        from retinaunet.dicom_series import DicomError, find_series

        (series,) = find_series(tmp_path).series
        with pytest.raises(DicomError, match="1.9.7.*cannot decode"):
            series.read()
    else:
        line = _refusal(tmp_path, "1.9.7")
        assert "JPEG Lossless" in line and "decoder" in line


def test_core_imports_without_the_dicom_extra_and_says_how_to_install_it():
    import subprocess
    import sys

    code = ("import sys; sys.modules['pydicom'] = None; sys.modules['highdicom'] = None\n"
            "import retinaunet.inference.cli, retinaunet.convert.cli, retinaunet.dicom_series as d\n"
            "import retinaunet.inference.reader_outputs\n"
            "try:\n    d.require()\nexcept d.MissingExtraError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                         errors="replace", check=True).stdout
    assert out.count("\n") == 1 and "pip install -e \".[dicom]\"" in out


def test_export_script_writes_series_that_read_back(tmp_path):
    import runpy

    from retinaunet.dicom_series import find_series
    from tests.dicom_fixtures import write_nifti_case

    write_nifti_case(tmp_path / "images" / "toy_0000.nii.gz")
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "export_dicom.py"))
    assert script["main"]([str(tmp_path / "images"), str(tmp_path / "dicom")]) == 0
    (series,) = find_series(tmp_path / "dicom").series
    assert series.geometry.same_as(toy_geometry()) is None
    assert np.array_equal(series.read(), toy_volume())
    assert series.uid in (tmp_path / "dicom" / "series.csv").read_text()
