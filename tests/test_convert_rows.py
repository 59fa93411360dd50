"""rud_convert boxes / points: every row is checked before anything is painted (a bad row is refused with
one line naming the file, the row and the fix), world boxes on oblique scans are flagged, and a missing
data root is created."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retinaunet.convert.cli import main as rud_convert
from retinaunet.convert.labels import convert_labels
from retinaunet.convert.writer import ConvertError
from retinaunet.io import read_image, read_json
from retinaunet.layout import TaskPaths
from tests.convert_fixtures import ROTATED, make_images

GOOD_BOX = "a,0,4,4,2,12,14,8"
GOOD_POINT = "a,0,10,12,6,4"
# 30 degrees about z: no image axis runs along a world axis in the x-y plane
_C, _S = math.cos(math.pi / 6), math.sin(math.pi / 6)
OBLIQUE = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0)

BAD_BOXES = [  # (coords, row, words the message must hold)
    ("voxel", "b,0,12,4,2,4,14,8", ["x1", "x0", "in order"]),           # inverted x
    ("world", "b,0,4,14,2,12,4,8", ["y1", "y0", "in order"]),           # inverted y, world
    ("voxel", "b,0,4,4,5,12,14,5", ["z1", "z0", "half-open"]),          # empty voxel box
    ("voxel", "b,0,4,nan,2,12,14,8", ["y0", "finite"]),
    ("world", "b,0,4,4,2,inf,14,8", ["x1", "finite"]),
    ("voxel", "b,0,4,four,2,12,14,8", ["y0", "number"]),
    ("voxel", "b,-1,4,4,2,12,14,8", ["class", "-1"]),
]
BAD_POINTS = [
    ("diameter", "b,0,10,12,6,-4", ["diameter", "positive"]),
    ("diameter", "b,0,10,12,6,0", ["diameter", "positive"]),
    ("diameter", "b,0,10,12,6,nan", ["diameter", "positive"]),
    ("diameter", "b,0,nan,12,6,4", ["'x'", "finite"]),
    ("diameter_x,diameter_y,diameter_z", "b,0,10,12,6,4,-2,4", ["diameter_y", "positive"]),
]


def _images(tmp_path, **kw):
    return make_images(tmp_path / "imgs", **kw)


def _refused(tmp_path, kind, header, rows, coords, words, **kw):
    images = _images(tmp_path)
    path = tmp_path / f"{kind}.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    task = tmp_path / "Task040_Rows"
    with pytest.raises(ConvertError) as info:
        convert_labels(kind, images, path, task, coords=coords, progress=False, **kw)
    message = str(info.value)
    assert "\n" not in message and f"{kind}.csv line 3" in message and "case b" in message, message
    for word in words:
        assert word in message, message
    # nothing painted: not even the good row of case a, which comes first
    assert not (TaskPaths(task).labels_tr / "a.json").exists()
    return message


@pytest.mark.parametrize("coords,row,words", BAD_BOXES)
def test_a_bad_box_row_is_refused_before_anything_is_painted(tmp_path, coords, row, words):
    _refused(tmp_path, "boxes", "case,class,x0,y0,z0,x1,y1,z1", [GOOD_BOX, row], coords, words)


@pytest.mark.parametrize("diameters,row,words", BAD_POINTS)
def test_a_bad_point_row_is_refused_before_anything_is_painted(tmp_path, diameters, row, words):
    good = GOOD_POINT if diameters == "diameter" else GOOD_POINT + ",4,4"
    _refused(tmp_path, "points", f"case,class,x,y,z,{diameters}", [good, row], "world", words)


def test_a_class_outside_the_given_classes_is_refused(tmp_path):
    message = _refused(tmp_path, "points", "case,class,x,y,z,diameter", ["a,lesion,10,12,6,4", "b,cyst,10,12,6,4"],
                       "world", ["cyst", "--classes"], class_names=["lesion"])
    assert "lesion" in message


def test_json_rows_are_named_by_case_and_record(tmp_path):
    images = _images(tmp_path)
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a": [{"class": 0, "x0": 2, "y0": 3, "z0": 1, "x1": 6, "y1": 9, "z1": 4},
                                      {"class": 0, "x0": 6, "y0": 3, "z0": 1, "x1": 2, "y1": 9, "z1": 4}]}))
    with pytest.raises(ConvertError, match=r"boxes\.json record 2 of case a: 'x1' .* 'x0'"):
        convert_labels("boxes", images, path, tmp_path / "Task041_Json", coords="voxel", progress=False)


def test_rud_convert_reports_a_bad_row_in_one_line(tmp_path, data_root, capsys):
    images = _images(tmp_path)
    (tmp_path / "b.csv").write_text("case,class,x0,y0,z0,x1,y1,z1\n" + GOOD_BOX + "\nb,0,12,4,2,4,14,8\n")
    assert rud_convert(["boxes", str(images), "--labels", str(tmp_path / "b.csv"), "--coords", "voxel",
                        "-t", "42", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.csv line 3" in err and "in order" in err
    assert not list(data_root.glob("Task042_*/raw_splitted/labelsTr/*.json"))


def test_good_rows_still_paint_and_unknown_cases_and_far_centres_are_dropped(tmp_path):
    images = _images(tmp_path)
    path = tmp_path / "points.csv"
    path.write_text("case,class,x,y,z,diameter\n" + GOOD_POINT + "\nb,0,500,12,6,4\nzz,0,1,1,1,4\n")
    summary = convert_labels("points", images, path, tmp_path / "Task043_Ok", coords="world", progress=False)
    assert summary.objects == {0: 1}
    assert sorted(r for _, r in summary.dropped) == ["no image of this case", "outside the image"]
    assert "warning" not in summary.text()


@pytest.mark.parametrize("direction,coords,warned", [(OBLIQUE, "world", True), (OBLIQUE, "voxel", False),
                                                       (ROTATED, "world", False)])
def test_world_boxes_on_an_oblique_scan_are_flagged(tmp_path, direction, coords, warned):
    images = _images(tmp_path, cases=("a", "b"), direction=direction, origin=(5.0, 6.0, 7.0))
    lo, hi = np.array([4, 6, 2]), np.array([12, 14, 8])  # voxel box x, y, z (half-open)
    box = [*lo, *hi]
    if coords == "world":  # the axis-aligned world box around it
        geom = read_image(images / "a_0000.nii.gz")[1]
        corners = np.array(np.meshgrid(*[[a - 0.5, b - 0.5] for a, b in zip(lo[::-1], hi[::-1])],
                                       indexing="ij")).reshape(3, -1).T
        world = geom.index_to_world(corners)
        box = [*world.min(0), *world.max(0)]
    row = ",".join(str(float(v)) for v in box)
    path = tmp_path / "boxes.csv"
    path.write_text(f"case,class,x0,y0,z0,x1,y1,z1\na,0,{row}\nb,0,{row}\n")
    summary = convert_labels("boxes", images, path, tmp_path / "Task044_Oblique", coords=coords, progress=False)
    text = summary.text()
    assert summary.objects == {0: 2}
    assert ("warning" in text and "--coords voxel" in text and "2 scan(s)" in text) == warned, text
    labels, _ = read_image(TaskPaths(tmp_path / "Task044_Oblique").labels_tr / "a.nii.gz")
    exact = np.count_nonzero(labels) == 8 * 8 * 6
    assert exact != warned  # the warning says what happened: the world box covers more than the object


def test_world_points_on_an_oblique_scan_are_not_flagged(tmp_path):
    images = _images(tmp_path, cases=("a",), direction=OBLIQUE)
    path = tmp_path / "points.csv"
    path.write_text("case,class,x,y,z,diameter\na,0,6,6,6,4\n")
    summary = convert_labels("points", images, path, tmp_path / "Task045_Points", progress=False)
    assert summary.objects == {0: 1} and "warning" not in summary.text()


def test_rud_convert_creates_a_missing_data_root(tmp_path, monkeypatch, capsys):
    images = _images(tmp_path)
    (tmp_path / "b.csv").write_text("case,class,x0,y0,z0,x1,y1,z1\n" + GOOD_BOX + "\n")
    root = tmp_path / "new" / "data"
    monkeypatch.setenv("RUD_DATA", str(root))
    assert rud_convert(["boxes", str(images), "--labels", str(tmp_path / "b.csv"), "--coords", "voxel",
                        "-t", "46", "--quiet"]) == 0, capsys.readouterr().err
    info = read_json(root / "Task046_Boxes" / "dataset.json")
    assert info["labels"] == {"0": "class0"}
    labels, _ = read_image(root / "Task046_Boxes" / "raw_splitted" / "labelsTr" / "a.nii.gz")
    assert np.count_nonzero(labels) == 8 * 10 * 6


def test_rud_example_creates_a_missing_data_root(tmp_path, monkeypatch, capsys):
    from retinaunet.toy_cli import main as rud_example

    root = tmp_path / "fresh" / "data"
    monkeypatch.setenv("RUD_DATA", str(root))
    assert rud_example(["shapes", "--num-train", "2", "--num-test", "0", "--quiet"]) == 0, capsys.readouterr().err
    assert list(root.glob("Task*/dataset.json"))


@pytest.mark.parametrize("row", ["1.2.3,nan,0,0,5", "1.2.3,0,0,0,nan", "1.2.3,0,inf,0,5"])
def test_a_luna16_row_that_is_not_finite_is_refused(tmp_path, row):
    from retinaunet.convert.luna16 import read_luna_csv

    path = tmp_path / "annotations.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,1,2,3,5\n" + row + "\n")
    with pytest.raises(ConvertError, match="line 3 .*not finite"):
        read_luna_csv(path)
