"""rud_evaluate refuses predictions it cannot score honestly, and ground truth it would misread."""

from __future__ import annotations

import json

import numpy as np
import pytest
from loguru import logger

from retinaunet.evaluation.evaluate import evaluate_folder
from retinaunet.evaluation.io import EvaluationError
from tests.test_evaluation import _toy_folders

BAD = {
    "nan box": {"box": [1, 2, 2, float("nan"), 6, 6], "score": 0.5, "class": 0},
    "inf box": {"box": [1, 2, 2, float("inf"), 6, 6], "score": 0.5, "class": 0},
    "inverted box": {"box": [3, 2, 2, 1, 6, 6], "score": 0.5, "class": 0},
    "nan score": {"box": [1, 2, 2, 3, 6, 6], "score": float("nan"), "class": 0},
    "string score": {"box": [1, 2, 2, 3, 6, 6], "score": "0.9", "class": 0},
    "float class": {"box": [1, 2, 2, 3, 6, 6], "score": 0.5, "class": 0.5},
    "string coordinate": {"box": [1, 2, 2, "3", 6, 6], "score": 0.5, "class": 0},
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_prediction_entries_are_refused(tmp_path, kind):
    labels, preds = _toy_folders(tmp_path)
    (preds / "b.json").write_text(json.dumps({"case": "b", "boxes": [BAD[kind]]}))
    with pytest.raises(EvaluationError, match=r"b\.json: box entry 0"):
        evaluate_folder(preds, labels)


def test_prediction_files_of_unknown_cases_warn(tmp_path):
    labels, preds = _toy_folders(tmp_path)
    (preds / "zz.json").write_text(json.dumps({"case": "zz", "boxes": []}))
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(str(m)), level="WARNING")
    try:
        evaluate_folder(preds, labels)
    finally:
        logger.remove(sink)
    assert any("zz.json" in m and "no labelled case" in m for m in seen), seen


def test_negative_ground_truth_ids_are_refused(tmp_path):
    from retinaunet.io import write_image

    labels, preds = _toy_folders(tmp_path)
    inst = np.zeros((8, 16, 16), np.int32)
    inst[1:3, 2:6, 2:6] = -1
    write_image(inst, None, labels / "a.nii.gz")
    (labels / "a.json").write_text(json.dumps({"instances": {"-1": 0}}))
    with pytest.raises(EvaluationError, match="negative"):
        evaluate_folder(preds, labels)
