from __future__ import annotations

import pytest

from retinaunet.layout import LayoutError, TaskPaths, data_root, find_task


def _make_task(root, name):
    d = root / name
    d.mkdir()
    (d / "dataset.json").write_text("{}")
    return d


def test_find_task_by_number_and_name(data_root):
    t1 = _make_task(data_root, "Task001_Liver")
    _make_task(data_root, "Task012_Lung")
    assert find_task(1) == t1
    assert find_task("001") == t1
    assert find_task("Task001_Liver") == t1
    assert find_task("12").name == "Task012_Lung"
    assert find_task(str(t1)) == t1.resolve()


def test_find_task_errors_are_helpful(data_root, monkeypatch):
    _make_task(data_root, "Task001_A")
    _make_task(data_root, "Task001_B")
    with pytest.raises(LayoutError, match="ambiguous"):
        find_task(1)
    with pytest.raises(LayoutError, match="no task with number 7"):
        find_task(7)
    with pytest.raises(LayoutError, match="cannot read task"):
        find_task("liver")
    monkeypatch.delenv("RUD_TASK", raising=False)
    with pytest.raises(LayoutError, match="RUD_TASK"):
        find_task(None)
    monkeypatch.setenv("RUD_TASK", "Task001_A")
    assert find_task(None).name == "Task001_A"


def test_data_root_requires_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RUD_DATA", raising=False)
    with pytest.raises(LayoutError, match="RUD_DATA is not set"):
        data_root()
    with pytest.raises(LayoutError, match="does not exist"):
        data_root(tmp_path / "missing")


def test_task_paths(data_root):
    t = TaskPaths(_make_task(data_root, "Task003_X"))
    assert t.images_tr == t.root / "raw_splitted" / "imagesTr"
    assert t.labels_ts == t.root / "raw_splitted" / "labelsTs"
    assert t.plans.name == "plans.json" and t.fingerprint.name == "fingerprint.json"
    assert t.preprocessed("3d") == t.root / "preprocessed" / "3d"
    assert t.fold_dir("retina_unet", "2d", 3) == t.root / "models" / "retina_unet_2d" / "fold3"
    assert t.predictions("run1") == t.root / "predictions" / "run1"
    (t.root / "dataset.json").unlink()
    (t.root / "dataset.yaml").write_text("dim: 2\n")
    assert t.dataset_file.name == "dataset.yaml"
