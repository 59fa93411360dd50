"""rud_predict on DICOM series: the same boxes as from the NIfTI case, and every reader output reads back.

One tiny randomly initialised 3D model predicts a toy case twice, from NIfTI and from the DICOM series
written from it (plus a refused series beside it); the tests read what the two runs wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from retinaunet.io import Geometry
from tests.dicom_fixtures import make_task_with_model, write_dicom_case, write_nifti_case

UID = "1.2.826.0.1.3680043.10.543.1"
BAD_UID = "1.2.826.0.1.3680043.10.543.2"
CASE = UID.replace(".", "_")
POINT = 0.3


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from retinaunet.inference.cli import main

    root = tmp_path_factory.mktemp("dicom_runs")
    task = make_task_with_model(root)
    write_nifti_case(root / "nifti" / "toy_0000.nii.gz")
    write_dicom_case(root / "dicom" / "patient" / "study" / "ct", series_uid=UID)
    bad = write_dicom_case(root / "dicom" / "patient" / "study" / "gap", series_uid=BAD_UID)
    bad[5].unlink()  # a missing slice: refused, nothing written for it
    before = _snapshot(root / "dicom")
    common = ["-t", str(task), "--folds", "0", "--device", "cpu", "--no-tta", "--override", "min_score=0.22",
              "--operating-point", str(POINT)]
    assert main([*common, "-i", str(root / "nifti"), "-o", str(root / "out_nifti")]) == 0
    assert main([*common, "-i", str(root / "dicom"), "-o", str(root / "out_dicom"), "--dicom"]) == 0
    return {"root": root, "nifti": root / "out_nifti", "dicom": root / "out_dicom", "before": before}


def _boxes(path: Path) -> list[dict]:
    return json.loads(path.read_text())["boxes"]


def test_dicom_series_predicts_the_boxes_of_the_nifti_case(runs):
    a, b = _boxes(runs["nifti"] / "toy.json"), _boxes(runs["dicom"] / f"{CASE}.json")
    assert len(a) >= 2 and len(a) == len(b)
    for x, y in zip(a, b):
        assert x["class"] == y["class"] and abs(x["score"] - y["score"]) < 1e-4
        np.testing.assert_allclose(x["box"], y["box"], atol=1e-3)
        np.testing.assert_allclose(x["center_world"], y["center_world"], atol=1e-3)


def test_outputs_name_the_series_and_leave_the_input_alone(runs):
    out = runs["dicom"]
    doc = json.loads((out / f"{CASE}.json").read_text())
    assert doc["source_name"] == UID
    assert UID in (out / "predictions.csv").read_text().splitlines()[1]
    assert UID in (out / "report.html").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{CASE}.json", f"{CASE}.mrk.json", f"{CASE}.seg.dcm", f"{CASE}.sr.dcm", "gallery.png", "predictions.csv",
         "report.html"])  # nothing of the refused series
    assert _snapshot(runs["root"] / "dicom") == runs["before"]


def test_refused_series_gets_one_line(tmp_path, capsys):
    from loguru import logger
    from retinaunet.inference.cli import main

    task = make_task_with_model(tmp_path)
    write_dicom_case(tmp_path / "in", series_uid=BAD_UID)[4].unlink()
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(str(m)), level="WARNING")
    try:
        assert main(["-t", str(task), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 1
    finally:
        logger.remove(sink)
    (line,) = [line for line in seen if BAD_UID in line]
    assert "missing slices" in line and "\n" not in line.rstrip("\n")
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rud_predict: ") and "1 refused" in err[-1]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _reported(runs) -> list[dict]:
    return [b for b in _boxes(runs["dicom"] / f"{CASE}.json") if b["score"] >= POINT]


def _source_geometry(runs) -> Geometry:
    return Geometry.from_dict({**json.loads((runs["dicom"] / f"{CASE}.json").read_text())})


def test_seg_reads_back_with_boxes_within_half_a_voxel(runs):
    hd = pytest.importorskip("highdicom")
    import pydicom

    path = runs["dicom"] / f"{CASE}.seg.dcm"
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == UID
    seg = hd.seg.segread(path)
    reported, geometry = _reported(runs), _source_geometry(runs)
    assert reported and seg.number_of_segments == len(reported)
    volume = seg.get_volume(combine_segments=False)
    for s, entry in enumerate(reported):
        desc = seg.get_segment_description(s + 1)
        assert desc.segment_label == f"{entry['class_name']} {entry['score']:.2f}"
        voxels = np.argwhere(volume.array[..., s] > 0)
        world = volume.map_indices_to_reference(voxels)
        index = geometry.world_to_index(world)  # SimpleITK indices of the voxels: voxel i spans [i, i+1)
        lo, hi = index.min(axis=0), index.max(axis=0) + 1
        box = np.asarray(entry["box"])
        assert np.all(np.abs(lo - box[:3]) <= 0.5 + 1e-3) and np.all(np.abs(hi - box[3:]) <= 0.5 + 1e-3), (lo, hi, box)


def test_sr_reads_back_with_centres_extents_classes_and_scores(runs):
    hd = pytest.importorskip("highdicom")
    import pydicom

    path = runs["dicom"] / f"{CASE}.sr.dcm"
    ds = pydicom.dcmread(path)
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].SeriesInstanceUID == UID
    sr = hd.sr.srread(path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    reported, geometry = _reported(runs), _source_geometry(runs)
    assert len(groups) == len(reported)
    half_voxel = np.asarray(geometry.spacing[::-1]) / 2  # x, y, z
    for group, entry in zip(groups, reported):
        assert group.roi.graphic_type.value == "ELLIPSOID" and group.roi.source_series_for_segmentation.value == UID
        points = np.asarray(group.roi.graphic_data, dtype=np.float64).reshape(6, 3)
        np.testing.assert_array_less(np.abs(points.mean(axis=0) - entry["center_world"]), half_voxel)
        measured = {m.name.meaning: m.value for m in group.get_measurements()}
        extents = [measured[f"Extent along image {a} axis"] for a in "xyz"]
        np.testing.assert_allclose(extents, entry["size_mm"][::-1], atol=1e-3)
        lengths = sorted(np.linalg.norm(points[2 * i + 1] - points[2 * i]) for i in range(3))
        np.testing.assert_allclose(lengths, sorted(entry["size_mm"]), atol=1e-3)
        assert abs(measured["Probability"] - entry["score"]) < 1e-6
        assert group.finding_type.value == f"class{entry['class']}"
        assert group.finding_type.meaning == entry["class_name"]


def test_sr_of_a_series_without_findings_says_none_reached_the_point(runs, tmp_path):
    """highdicom's TID 1500 needs a group: a series with nothing at the operating point gets one saying so."""
    hd = pytest.importorskip("highdicom")

    from retinaunet.inference.dicom_export import write_case_dicom

    from retinaunet.dicom_series import find_series

    doc = json.loads((runs["dicom"] / f"{CASE}.json").read_text())
    (series,) = [s for s in find_series(runs["root"] / "dicom").series if s.uid == UID]
    written = write_case_dicom(doc, series, tmp_path, operating_point=1.01)  # above every score: no finding
    assert [p.name for p in written] == [f"{CASE}.sr.dcm"]  # no SEG (a SEG needs a segment), an SR
    sr = hd.sr.srread(written[0])
    assert sr.content.get_volumetric_roi_measurement_groups() == []
    (group,) = sr.content.get_image_measurement_groups()
    assert group.tracking_identifier == "no finding"
    (measurement,) = group.get_measurements()
    assert measurement.name.meaning == "Findings at or above the operating point" and measurement.value == 0


def test_markups_hold_one_roi_per_box(runs):
    slicerio = pytest.importorskip("slicerio")
    from slicerio.markups import _MARKUPS_SCHEMA  # slicerio's markups structure: the schema Slicer reads

    doc = json.loads((runs["dicom"] / f"{CASE}.json").read_text())
    markups = json.loads((runs["dicom"] / f"{CASE}.mrk.json").read_text())
    assert markups["@schema"] == _MARKUPS_SCHEMA and slicerio.__version__
    assert len(markups["markups"]) == len(doc["boxes"])
    for roi, entry in zip(markups["markups"], doc["boxes"]):
        assert roi["type"] == "ROI" and roi["coordinateSystem"] == "LPS" and roi["roiType"] == "Box"
        np.testing.assert_allclose(roi["center"], entry["center_world"])
        np.testing.assert_allclose(roi["size"], entry["size_mm"][::-1])
        np.testing.assert_allclose(roi["orientation"], doc["direction"])
        (point,) = roi["controlPoints"]
        assert point["label"] == f"{entry['class_name']} {entry['score']:.2f}"
        assert {"id", "label", "position", "selected", "locked", "visibility"} <= set(point)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _load_in_browser(page: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console's error lines, from headless Chromium."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
        env={**os.environ, "HOME": str(page.parent)})
    errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return result.stdout, errors


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine: the report's browser test needs one "
                                             "(apt-get install chromium)")
def test_report_opens_in_a_browser_with_every_finding(runs, tmp_path):
    dom, errors = _load_in_browser(runs["dicom"] / "report.html")
    assert errors == []
    assert '<span id="shown-count">' in dom  # the page's script ran: it rewrites the count
    doc = json.loads((runs["dicom"] / f"{CASE}.json").read_text())
    for k in range(len(doc["boxes"])):
        assert f'id="{CASE}-{k}"' in dom and f'href="#{CASE}-{k}"' in dom
    assert dom.count('class="finding above"') == len(_reported(runs))
    assert dom.count("data:image/png;base64,") == 3 * len(doc["boxes"])
    broken = tmp_path / "broken.html"  # the check sees a console error when there is one
    broken.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    assert _load_in_browser(broken)[1]
