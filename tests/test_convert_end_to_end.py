"""Converted tasks run through every stage: plan -> preprocess -> train (1 epoch) -> predict (-> evaluate).

Tiny volumes and one short epoch: these check that each converter's output is a task the pipeline takes,
not that anything is learnt.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from retinaunet.inference.cli import main as rud_predict
from retinaunet.planning.cli import main as rud_plan
from retinaunet.preprocessing.cli import main as rud_preprocess

from retinaunet.convert.cli import main as rud_convert
from retinaunet.convert.lidc import LidcScan, ReaderMark, convert_lidc_scans, find_dicom_series
from retinaunet.evaluation.cli import main as rud_evaluate
from retinaunet.layout import TaskPaths
from retinaunet.plans import load_plans
from retinaunet.training.cli import main as rud_train
from tests.convert_fixtures import make_images, make_luna, make_nnunet_task, write_dicom_series

SHORT = ["--override", "training.epochs=1", "training.batches_per_epoch=1", "batch_size=2"]


def _plan_train_predict(task: str, paths: TaskPaths, fold: str = "0") -> TaskPaths:
    assert rud_plan(["-t", task, *SHORT]) == 0
    assert rud_preprocess(["-t", task, "--workers", "0", "--shard", "0/2"]) == 0
    assert rud_preprocess(["-t", task, "--workers", "0", "--shard", "1/2"]) == 0
    assert rud_train([fold, "-t", task, "--workers", "0"]) == 0
    return paths


def test_luna16_task_trains_predicts_and_scores(tmp_path, data_root, capsys):
    make_luna(tmp_path / "luna", n_subsets=3, per_subset=2)
    assert rud_convert(["luna16", str(tmp_path / "luna"), "-t", "16", "--quiet"]) == 0
    paths = TaskPaths(data_root / "Task016_LUNA16")
    assert rud_train(["3", "-t", "16"]) == 1  # three folds (subsets) here: 0-2
    _plan_train_predict("16", paths, fold="2")
    plans = load_plans(paths.plans)
    fold = paths.fold_dir("retina_unet", plans.plan_name, 2)
    assert (fold / "test_predictions").is_dir()
    out = data_root / "Task016_LUNA16" / "predictions" / "run"
    assert rud_predict(["-t", "16", "-i", str(paths.images_tr), "-o", str(out), "--folds", "2", "--no-tta"]) == 0
    names = json.loads((paths.root / "case_names.json").read_text())
    doc = json.loads((out / f"{next(iter(names))}.json").read_text())
    assert doc["source_name"] == names[doc["case"]]
    header = (out / "predictions.csv").read_text().splitlines()[0]
    assert header.endswith("source_name")
    ann = tmp_path / "luna" / "annotations.csv"
    excl = tmp_path / "luna" / "annotations_excluded.csv"
    capsys.readouterr()
    assert rud_evaluate(["-t", "16", "-p", str(out), "--luna", "--annotations", str(ann), "--excluded", str(excl)]) == 0
    assert "CPM" in capsys.readouterr().out
    rows = (out / "luna_submission.csv").read_text().splitlines()
    assert rows[0] == "seriesuid,coordX,coordY,coordZ,probability"
    assert all(r.split(",")[0] in names.values() for r in rows[1:])
    metrics = json.loads((out / "luna_metrics.json").read_text())
    assert metrics["counts"]["scans"] == 6 and metrics["counts"]["nodules"] == 9
    assert 0.0 <= metrics["cpm"] <= 1.0
    # the folds' test predictions pooled (only fold 2 trained here: a warning for the others)
    assert rud_evaluate(["-t", "16", "--cv", "--luna", "--annotations", str(ann)]) == 0
    assert json.loads((paths.model_dir("retina_unet", plans.plan_name) / "luna_metrics.json").read_text())[
        "counts"]["scans"] == 2


@pytest.mark.parametrize("kind", ["seg2det", "points", "lidc"])
def test_converted_tasks_train_and_predict(tmp_path, data_root, kind):
    if kind == "seg2det":
        make_nnunet_task(tmp_path / "Task500_Seg", n_train=5)
        assert rud_convert(["seg2det", str(tmp_path / "Task500_Seg"), "-t", "20", "--min-size", "3", "--quiet"]) == 0
        task = "20"
    elif kind == "points":
        imgs = make_images(tmp_path / "imgs", cases=("a", "b", "c", "d", "e"))
        rows = ["case,class,x,y,z,diameter"] + [f"{c},spot,{10 + k},{12 + k},{12.0},8" for k, c in enumerate("abcde")]
        (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
        assert rud_convert(["points", str(imgs), "--labels", str(tmp_path / "p.csv"), "-t", "21", "--quiet"]) == 0
        task = "21"
    else:
        series = {}
        for i in range(5):
            z = [-50.0 + 2.0 * k for k in range(12)]
            array = np.full((12, 40, 40), -900, dtype=np.int16)
            array[4:8, 12:20, 14:22] = 60
            folder = tmp_path / "LIDC" / f"LIDC-IDRI-{i:04d}" / "s"
            write_dicom_series(folder, array, f"1.2.{i}", z, pixel_spacing=1.0)
            marks = [ReaderMark(2 + 2 * (i % 2), [(zz, np.array([[14, 12], [21, 12], [21, 19], [14, 19]], float), True)
                                                  for zz in z[4:8]]) for _ in range(3)]
            series[f"1.2.{i}"] = LidcScan(f"1.2.{i}", f"LIDC-IDRI-{i:04d}", [marks])
        convert_lidc_scans(series.values(), find_dicom_series(tmp_path / "LIDC"), data_root / "Task012_LIDC",
                           progress=False)
        task = "12"
    paths = _plan_train_predict(task, TaskPaths.from_task(task))
    out = paths.root / "predictions" / "run"
    assert rud_predict(["-t", task, "-i", str(paths.images_tr), "-o", str(out), "--folds", "0", "--no-tta"]) == 0
    assert (out / "predictions.csv").is_file()
