"""Validation lists every problem (broken links, vector images), reads yes/no flags, and warns of doubts."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import SimpleITK as sitk

from retinaunet.dataset import load_dataset_info, validate_dataset
from retinaunet.io import ReadError, write_image
from tests.test_dataset import GEOM, write_case


@pytest.fixture
def task(data_root):
    t = data_root / "Task006_Checks"
    t.mkdir()
    (t / "dataset.json").write_text(json.dumps({"task": t.name, "dim": 3, "labels": {"0": "a"},
                                                "modalities": {"0": "CT"}, "test_labels": True}))
    for name in ("a", "b", "c"):
        write_case(t, name, objects=((1, 0),), modalities=1)
    return t


def _vector(path):
    image = sitk.Compose([sitk.GetImageFromArray(np.zeros(GEOM.shape, np.float32))] * 3)
    sitk.WriteImage(image, str(path))


def test_every_vector_image_is_listed(task):
    images = task / "raw_splitted" / "imagesTr"
    _vector(images / "a_0000.nii.gz")
    _vector(images / "b_0000.nii.gz")
    problems = validate_dataset(task, progress=False)
    assert sum("components" in p for p in problems) == 2, problems


def test_broken_symlink_is_reported(task):
    images = task / "raw_splitted" / "imagesTr"
    (images / "d_0000.nii.gz").symlink_to(task / "gone" / "d_0000.nii.gz")
    problems = validate_dataset(task, progress=False)
    assert any("d_0000.nii.gz" in p and "broken symbolic link" in p for p in problems), problems


@pytest.mark.parametrize("value, expected", [("false", False), ("False", False), ("no", False), (False, False),
                                             ("true", True), (True, True)])
def test_test_labels_words(task, value, expected):
    data = json.loads((task / "dataset.json").read_text())
    data["test_labels"] = value
    (task / "dataset.json").write_text(json.dumps(data))
    assert load_dataset_info(task).test_labels is expected


def test_test_labels_nonsense_is_an_error(task):
    data = json.loads((task / "dataset.json").read_text())
    data["test_labels"] = "maybe"
    (task / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(ReadError, match="test_labels"):
        load_dataset_info(task)


def test_names_equal_after_unicode_normalisation(task):
    nfc, nfd = unicodedata.normalize("NFC", "caf\u00e9"), unicodedata.normalize("NFD", "caf\u00e9")
    assert nfc != nfd
    write_case(task, nfc, modalities=1)
    write_case(task, nfd, modalities=1)
    problems = validate_dataset(task, progress=False)
    assert any("Unicode" in p for p in problems), problems


def test_same_case_in_train_and_test_warns(task):
    write_case(task, "b", split="Ts", modalities=1)
    warnings: list[str] = []
    assert validate_dataset(task, progress=False, warnings=warnings) == []
    assert len(warnings) == 1 and "b" in warnings[0] and "identical to the training image" in warnings[0]


def test_a_shared_name_with_another_image_does_not_warn(task):
    # toy generators and many exports number train and test cases alike: only identical images are a leak
    write_case(task, "b", split="Ts", modalities=1)
    write_image(np.ones(GEOM.shape, np.float32), GEOM, task / "raw_splitted" / "imagesTs" / "b_0000.nii.gz")
    warnings: list[str] = []
    assert validate_dataset(task, progress=False, warnings=warnings) == []
    assert warnings == []


def _fp(spacings, objects=1):
    return {"task": "T", "objects_per_case": {"total": objects},
            "cases": [{"case": f"c{i}", "spacing": list(s), "shape": [40, 64, 64]} for i, s in enumerate(spacings)]}


def test_dataset_without_objects_warns():
    from retinaunet.planning.fingerprint import fingerprint_warnings

    assert fingerprint_warnings(_fp([(2.0, 1.0, 1.0)] * 3)) == []
    warnings = fingerprint_warnings(_fp([(2.0, 1.0, 1.0)] * 3, objects=0))
    assert len(warnings) == 1 and "no training case holds an object" in warnings[0]


def test_spacing_outliers_warn():
    from retinaunet.planning.fingerprint import fingerprint_warnings

    warnings = fingerprint_warnings(_fp([(2.0, 1.0, 1.0)] * 4 + [(0.001, 1.0, 1.0), (2.0, 100.0, 100.0)]))
    assert len(warnings) == 2 and warnings[0].startswith("c4:") and warnings[1].startswith("c5:")
