"""rud_plan's table shows every planned entry that differs from the schema's defaults, with its reason
(the segmentation loss weight of a box-only task included)."""

from __future__ import annotations

from retinaunet.planning.cli import main as rud_plan

from retinaunet.convert.labels import convert_labels
from retinaunet.plans import Plans, make_test_plans
from tests.convert_fixtures import make_images


def _row(out: str, key: str) -> str:
    rows = [line for line in out.splitlines() if line.split(" ", 1)[0] == key]
    assert len(rows) == 1, out
    return rows[0]


def test_a_box_only_task_shows_its_segmentation_loss_weight(tmp_path, data_root, capsys):
    make_images(tmp_path / "imgs", cases=("a", "b", "c", "d"))
    (tmp_path / "b.csv").write_text("case,class,x0,y0,z0,x1,y1,z1\n"
                                    + "".join(f"{c},0,4,4,2,12,14,8\n" for c in "abcd"))
    convert_labels("boxes", tmp_path / "imgs", tmp_path / "b.csv", data_root / "Task050_Boxes", coords="voxel",
                   progress=False)
    assert rud_plan(["-t", "50", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    row = _row(out, "training.seg_loss_weight")
    assert row.split()[1] == "0" and "seg_supervision false" in row
    assert rud_plan(["-t", "50", "--workers", "0", "--override", "inference.min_score=0.25",
                     "matching.candidates=6"]) == 0
    out = capsys.readouterr().out
    assert _row(out, "inference.min_score").split()[1] == "0.25" and "set by --override" in out
    assert _row(out, "matching.candidates").split()[1] == "6"
    assert "inference.nms_iou" not in out  # as the defaults have it


def test_changed_entries_against_the_defaults_filled_in_for_the_dims():
    plans = make_test_plans(dim=3, num_classes=1)
    changed = plans.changed_from_defaults()
    assert "inference.max_detections" not in changed and "inference.pre_nms_top_k" not in changed
    assert "training.seg_loss_weight" not in changed
    assert {"training.epochs", "training.learning_rate", "network.strides"} <= set(changed)  # no default
    plans.override("training.seg_loss_weight", 0.0)
    plans.override("inference.max_detections", 7)
    again = Plans.from_dict(plans.to_dict()).changed_from_defaults()
    assert again["training.seg_loss_weight"] == 0.0 and again["inference.max_detections"] == 7
