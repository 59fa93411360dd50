"""Exports keep the precision they were computed with: the LUNA16 submission and the run's CSV."""

from __future__ import annotations

import csv

import numpy as np
from retinaunet.inference.export import export_case, write_run_csv
from retinaunet.inference.predictor import CasePrediction

from retinaunet.evaluation.luna import Candidate, write_submission
from tests.test_export import props  # noqa: F401  (the fixture)

TINY = [3e-8, 1e-8, 4.9e-7, 1e-12, 0.123456789012345]  # below 5e-7 six decimals make ties (0.000000)


def test_luna_submission_keeps_every_probability_and_coordinate(tmp_path):
    centres = [(10.123456789, -20.000001, 30.5), (1e-5, 2.25, -3.0000004), (0, 0, 0), (1, 2, 3), (4, 5, 6)]
    cands = [Candidate("1.2.3", c, p) for c, p in zip(centres, TINY)]
    with (write_submission(cands, tmp_path / "luna_submission.csv")).open() as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["probability"]) for r in rows] == TINY
    assert len({r["probability"] for r in rows}) == len(TINY)  # no ties the scores did not have
    assert [tuple(float(r[k]) for k in ("coordX", "coordY", "coordZ")) for r in rows] == \
        [tuple(float(v) for v in c) for c in centres]


def test_run_csv_keeps_every_score_and_coordinate(tmp_path, props):  # noqa: F811
    boxes = np.array([[0.123456789, 1, 2, 3.987654321, 4, 5]] * len(TINY), dtype=float)
    export_case(CasePrediction(boxes, np.array(TINY), np.zeros(len(TINY), dtype=np.int64)), props, tmp_path)
    import json

    doc = json.loads((tmp_path / "case7.json").read_text())
    with write_run_csv(tmp_path).open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(float(r["score"]) for r in rows) == sorted(TINY)
    for row, box in zip(rows, doc["boxes"]):  # the JSON's order
        assert float(row["score"]) == box["score"]
        assert [float(row[f"center_{a}_mm"]) for a in "xyz"] == box["center_world"]
        assert [float(row[f"size_{a}_mm"]) for a in "zyx"] == box["size_mm"]
        assert [float(row[k]) for k in ("z0", "y0", "x0", "z1", "y1", "x1")] == box["box"]
