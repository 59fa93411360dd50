"""An interrupted prediction run: --continue ends with the files of an uninterrupted one; --overwrite never
leaves the previous model's CSV and gallery; a model folder of another task is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import retinaunet.inference.cli
import retinaunet.inference.pipeline
from retinaunet.inference.cli import main, predict_folder

from retinaunet.model_folder import ModelFolderError
from retinaunet.plans import make_test_plans
from tests.test_predict_cli import make_model_folder, write_image


@pytest.fixture
def setup(tmp_path):
    plans = make_test_plans(dim=2, num_classes=2)
    plans.target_spacing = [1.0, 1.0]
    task = tmp_path / "Task000_Test"
    model_dir = make_model_folder(task, plans)
    inp = tmp_path / "images"
    rng = np.random.default_rng(0)
    for case in ("a", "b", "c", "d"):
        write_image(inp / f"{case}_0000.nii.gz", rng.normal(size=(64, 64)), (1, 1))
    return task, model_dir, inp


def _interrupt_after(monkeypatch, n):
    real, calls = retinaunet.inference.pipeline.export_case, []

    def export(*args, **kwargs):
        if len(calls) == n:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(retinaunet.inference.pipeline, "export_case", export)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_continue_equals_an_uninterrupted_run(setup, tmp_path, monkeypatch):
    task, model_dir, inp = setup
    kw = dict(folds=[1], mirror=False, progress=False)
    predict_folder(model_dir, inp, tmp_path / "straight", **kw)
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            predict_folder(model_dir, inp, tmp_path / "resumed", **kw)
    assert sorted(_files(tmp_path / "resumed")) == ["a.json", "b.json"]
    with pytest.raises(retinaunet.inference.cli.OutputExistsError, match="--continue"):
        predict_folder(model_dir, inp, tmp_path / "resumed", **kw)
    predict_folder(model_dir, inp, tmp_path / "resumed", resume=True, **kw)
    assert _files(tmp_path / "resumed") == _files(tmp_path / "straight")


def test_interrupted_overwrite_leaves_no_old_csv_or_gallery(setup, tmp_path, monkeypatch):
    task, model_dir, inp = setup
    out = tmp_path / "out"
    predict_folder(model_dir, inp, out, [1], mirror=False, progress=False)
    assert (out / "predictions.csv").exists() and (out / "gallery.png").exists()
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(KeyboardInterrupt):
            predict_folder(model_dir, inp, out, [0], mirror=False, progress=False, overwrite=True)
    assert not (out / "predictions.csv").exists() and not (out / "gallery.png").exists()
    assert main(["-t", str(task), "-i", str(inp), "-o", str(out), "--device", "cpu", "--folds", "0",
                 "--no-tta", "--overwrite", "--continue"]) == 1


def test_model_folder_of_another_task_is_refused(setup, tmp_path, capsys):
    task, model_dir, inp = setup
    plans = json.loads((model_dir / "plans.json").read_text())
    plans["task"] = "Task001_Other"
    (model_dir / "plans.json").write_text(json.dumps(plans))
    assert main(["-t", str(task), "-i", str(inp), "-o", str(tmp_path / "o"), "--device", "cpu"]) == 1
    assert "trained on task Task001_Other" in capsys.readouterr().err
    with pytest.raises(ModelFolderError):
        retinaunet.inference.cli.check_model_task(model_dir, task.name)
