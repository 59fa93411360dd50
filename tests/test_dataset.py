"""Validation: a valid dataset passes, and each kind of bad input gives its one-line message naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retinaunet.dataset import DatasetError, check_dataset, list_cases, load_dataset_info, validate_dataset
from retinaunet.io import Geometry, write_image

GEOM = Geometry((2.0, 1.0, 1.0), (5.0, -3.0, 1.0), tuple(np.eye(3).ravel()), (6, 10, 12))


def write_case(task, name, split="Tr", objects=((1, 0),), modalities=2, geom=GEOM, image_dtype=np.float32):
    images, labels = task / "raw_splitted" / f"images{split}", task / "raw_splitted" / f"labels{split}"
    for m in range(modalities):
        write_image(np.random.default_rng(m).normal(size=geom.shape).astype(image_dtype), geom,
                    images / f"{name}_{m:04d}.nii.gz")
    inst = np.zeros(geom.shape, np.int16)
    for k, (i, _) in enumerate(objects):
        inst[1:3, 2 * k + 1: 2 * k + 2, 1:4] = i
    write_image(inst, geom, labels / f"{name}.nii.gz")
    (labels / f"{name}.json").write_text(json.dumps({"instances": {str(i): c for i, c in objects}}))


@pytest.fixture
def task(data_root):
    t = data_root / "Task005_Valid"
    t.mkdir()
    (t / "dataset.json").write_text(json.dumps({"task": "Task005_Valid", "dim": 3,
                                                "labels": {"0": "benign", "1": "malignant"},
                                                "modalities": {"0": "CT", "1": "PET"}, "test_labels": True}))
    write_case(t, "a", objects=((1, 0), (2, 1)))
    write_case(t, "b", objects=())  # a negative case is valid
    write_case(t, "c", split="Ts")
    return t


def problems_for(task):
    return validate_dataset(task, progress=False)


def only(problems, text, filename):
    hits = [p for p in problems if text in p]
    assert hits, f"no problem mentions '{text}': {problems}"
    assert all(filename in h for h in hits), hits
    assert all("\n" not in h for h in problems)
    return hits


def test_valid_dataset_passes(task):
    assert problems_for(task) == []
    info = check_dataset(task, progress=False)
    assert info.dim == 3 and info.num_classes == 2 and info.num_modalities == 2
    cases = list_cases(task)
    assert [c.name for c in cases] == ["a", "b"]
    assert [p.name for p in cases[0].images] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert cases[0].label_json.name == "a.json"


def test_yaml_description(task):
    (task / "dataset.json").unlink()
    (task / "dataset.yaml").write_text("task: Task005_Valid\ndim: 3\nlabels: {0: benign, 1: malignant}\n"
                                       "modalities: {0: CT, 1: PET}\n")
    assert load_dataset_info(task).labels == {0: "benign", 1: "malignant"}
    assert problems_for(task) == []


def test_missing_modality(task):
    (task / "raw_splitted/imagesTr/a_0001.nii.gz").unlink()
    only(problems_for(task), "missing modality 1", "a_0001.nii.gz")


def test_modality_with_other_geometry(task):
    other = Geometry((2.0, 1.0, 1.5), GEOM.origin, GEOM.direction, GEOM.shape)
    write_image(np.zeros(GEOM.shape, np.float32), other, task / "raw_splitted/imagesTr/a_0001.nii.gz")
    only(problems_for(task), "spacing", "a_0001.nii.gz")


def test_label_with_other_shape(task):
    other = Geometry(GEOM.spacing, GEOM.origin, GEOM.direction, (6, 10, 11))
    write_image(np.zeros(other.shape, np.int16), other, task / "raw_splitted/labelsTr/b.nii.gz")
    only(problems_for(task), "shape", "b.nii.gz")


def test_label_with_other_origin(task):
    other = Geometry(GEOM.spacing, (9.0, -3.0, 1.0), GEOM.direction, GEOM.shape)
    write_image(np.zeros(other.shape, np.int16), other, task / "raw_splitted/labelsTr/b.nii.gz")
    only(problems_for(task), "origin", "b.nii.gz")


def test_label_not_integer(task):
    write_image(np.zeros(GEOM.shape, np.float32), GEOM, task / "raw_splitted/labelsTr/b.nii.gz")
    only(problems_for(task), "not integer", "b.nii.gz")


def test_missing_label_json(task):
    (task / "raw_splitted/labelsTr/a.json").unlink()
    only(problems_for(task), "missing", "a.json")


def test_missing_label_file(task):
    (task / "raw_splitted/labelsTr/b.nii.gz").unlink()
    (task / "raw_splitted/labelsTr/b.json").unlink()
    only(problems_for(task), "no label for case 'b'", "b_0000.nii.gz")


def test_instance_in_map_not_in_json(task):
    (task / "raw_splitted/labelsTr/a.json").write_text(json.dumps({"instances": {"1": 0}}))
    only(problems_for(task), "instance 2 is in the label map but not in the json", "a.json")


def test_instance_in_json_not_in_map(task):
    (task / "raw_splitted/labelsTr/b.json").write_text(json.dumps({"instances": {"4": 0}}))
    only(problems_for(task), "instance 4 is in the json but not in the label map", "b.json")


def test_class_outside_labels(task):
    (task / "raw_splitted/labelsTr/a.json").write_text(json.dumps({"instances": {"1": 0, "2": 5}}))
    only(problems_for(task), "class 5", "a.json")


def test_nan_in_image(task):
    arr = np.zeros(GEOM.shape, np.float32)
    arr[0, 0, 0] = np.nan
    arr[1, 0, 0] = np.inf
    (task / "raw_splitted/imagesTr/b_0000.nii.gz").unlink()  # SimpleITK's NIfTI reader turns NaN into 0
    write_image(arr, GEOM, task / "raw_splitted/imagesTr/b_0000.nrrd")
    hits = only(problems_for(task), "NaN/inf", "b_0000.nrrd")
    assert "2 NaN/inf voxels" in hits[0]


def test_dim_mismatch(task):
    data = json.loads((task / "dataset.json").read_text())
    data["dim"] = 2
    (task / "dataset.json").write_text(json.dumps(data))
    hits = only(problems_for(task), "dataset.json says dim 2", "raw_splitted/images")
    assert len(hits) == 6  # every image file of the three cases is named


def test_case_name_with_dot(task):
    write_case(task, "d.1")
    only(problems_for(task), "contains a dot", "d.1_0000.nii.gz")


def test_duplicate_case(task):
    write_image(np.zeros(GEOM.shape, np.float32), GEOM, task / "raw_splitted/imagesTr/a_0000.nrrd")
    only(problems_for(task), "exists twice", "a_0000")
    write_case(task, "A")
    only(problems_for(task), "differ only in case", "_0000.nii.gz")


def test_no_training_cases(task):
    for f in (task / "raw_splitted/imagesTr").iterdir():
        f.unlink()
    problems = problems_for(task)
    only(problems, "no training cases", "imagesTr")
    only(problems, "label without images", "labelsTr")


def test_bad_file_name_and_bad_description(task):
    write_image(np.zeros(GEOM.shape, np.float32), GEOM, task / "raw_splitted/imagesTr/scan.nii.gz")
    only(problems_for(task), "<case>_<4-digit modality>", "scan.nii.gz")
    (task / "dataset.json").write_text(json.dumps({"dim": 4, "labels": {"0": "a"}, "modalities": {"0": "CT"}}))
    assert problems_for(task) == [f"{task / 'dataset.json'}: 'dim' must be 2 or 3, got 4"]


def test_check_dataset_raises_with_all_problems(task):
    (task / "raw_splitted/imagesTr/a_0001.nii.gz").unlink()
    (task / "raw_splitted/labelsTr/b.json").unlink()
    with pytest.raises(DatasetError) as err:
        check_dataset(task, progress=False)
    assert len(err.value.problems) == 2
    assert "2 problem(s)" in str(err.value)


def test_validation_reads_one_case_at_a_time(task, monkeypatch):
    """Validation must not hold more than one case's arrays: count live arrays from read_image."""
    import weakref

    import retinaunet.dataset as ds

    live: list = []
    peak = [0]
    original = ds.read_image

    def tracking(path):
        array, geom = original(path)
        live.append(weakref.ref(array))
        alive = sum(r() is not None for r in live)
        peak[0] = max(peak[0], alive)
        return array, geom

    monkeypatch.setattr(ds, "read_image", tracking)
    for i in range(5):
        write_case(task, f"extra{i}")
    assert problems_for(task) == []
    assert peak[0] <= 3, f"{peak[0]} arrays alive at once"
