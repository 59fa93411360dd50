"""rud_convert dicom: DICOM series with a SEG per series, or with a boxes table, -> a task in the raw layout."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from tests.dicom_fixtures import toy_geometry, write_dicom_case

UID_A, UID_B, UID_BAD = "1.2.826.0.1.3680043.10.544.1", "1.2.826.0.1.3680043.10.544.2", "1.2.826.0.1.3680043.10.544.3"


def _entry(box, geometry, score=0.9):
    b = np.asarray(box, dtype=float)
    centre = geometry.index_to_world((b[:3] + b[3:]) / 2 - 0.5)
    return {"class": 0, "class_name": "nodule", "score": score, "box": list(b), "center_world": list(centre),
            "size_mm": list((b[3:] - b[:3]) * np.asarray(geometry.spacing))}


def _source(tmp_path):
    write_dicom_case(tmp_path / "src" / "a", series_uid=UID_A)
    write_dicom_case(tmp_path / "src" / "b", series_uid=UID_B)
    write_dicom_case(tmp_path / "src" / "bad", series_uid=UID_BAD)[3].unlink()


def test_convert_dicom_with_a_seg_per_series(tmp_path):
    from retinaunet.inference.dicom_export import write_case_seg

    from retinaunet.convert.cli import main
    from retinaunet.dicom_series import find_series

    _source(tmp_path)
    geometry = toy_geometry()
    boxes = [[2, 5, 6, 5, 9, 12], [9, 20, 22, 12, 26, 30]]
    doc = {"case": "a", "shape": list(geometry.shape), "direction": list(geometry.direction),
           "boxes": [_entry(b, geometry) for b in boxes]}
    series = {s.uid: s for s in find_series(tmp_path / "src").series}
    write_case_seg(doc, series[UID_A], tmp_path / "segs" / "a.seg.dcm", operating_point=0.5)
    assert main(["dicom", str(tmp_path / "src"), "--labels", str(tmp_path / "segs"), "-t", str(tmp_path / "Task"),
                 "--quiet"]) == 0
    task = tmp_path / "Task"
    case = UID_A.replace(".", "_")
    assert json.loads((task / "case_names.json").read_text()) == {case: UID_A}
    assert sorted(p.name for p in (task / "raw_splitted" / "labelsTr").glob("*.json")) == [f"{case}.json"]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(task / "raw_splitted" / "labelsTr" / f"{case}.nii.gz")))
    label_json = json.loads((task / "raw_splitted" / "labelsTr" / f"{case}.json").read_text())
    assert label_json["instances"] == {"1": 0, "2": 0}
    for value, b in enumerate(boxes, start=1):
        where = np.argwhere(labels == value)
        assert where.min(axis=0).tolist() == b[:3] and (where.max(axis=0) + 1).tolist() == b[3:]
    assert json.loads((task / "dataset.json").read_text())["labels"] == {"0": "Lesion"}
    image = sitk.ReadImage(str(task / "raw_splitted" / "imagesTr" / f"{case}_0000.nii.gz"))
    assert image.GetSize() == tuple(reversed(geometry.shape))


def test_convert_dicom_with_a_boxes_table(tmp_path, capsys):
    from retinaunet.convert.cli import main

    _source(tmp_path)
    (tmp_path / "boxes.csv").write_text(f"case,class,x0,y0,z0,x1,y1,z1\n{UID_B},lesion,6,5,2,12,9,5\n"
                                        f"{UID_BAD},lesion,6,5,2,12,9,5\n")
    assert main(["dicom", str(tmp_path / "src"), "--labels", str(tmp_path / "boxes.csv"), "--coords", "voxel",
                 "-t", str(tmp_path / "Task")]) == 0
    out = capsys.readouterr().out
    assert UID_BAD in out and "missing slices" in out  # the refused series is in the summary's dropped items
    task = tmp_path / "Task"
    names = json.loads((task / "case_names.json").read_text())
    assert sorted(names.values()) == [UID_A, UID_B]
    case_b = UID_B.replace(".", "_")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(task / "raw_splitted" / "labelsTr" / f"{case_b}.nii.gz")))
    where = np.argwhere(labels == 1)
    assert where.min(axis=0).tolist() == [2, 5, 6] and (where.max(axis=0) + 1).tolist() == [5, 9, 12]
