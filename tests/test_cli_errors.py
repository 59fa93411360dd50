"""Every rud_* command fails with one line: full disk, no permission, hand-edited plans."""

from __future__ import annotations

import errno
import json
import os
import sys

import numpy as np
import pytest
from loguru import logger

import retinaunet.io
from retinaunet.plans import make_test_plans, save_plans


@pytest.fixture(autouse=True)
def quiet_logs():
    """Only what the commands print, not their progress logs."""
    logger.remove()
    yield
    logger.add(sys.stderr)


class _FailingOs:
    """The ``os`` module as ``retinaunet.io`` sees it, except that putting a written file in place fails."""

    def __init__(self, error):
        self._error = error

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, src, dst):
        raise self._error(dst)


@pytest.fixture(params=["enospc", "eacces"])
def broken_disk(request, monkeypatch):
    """Call it to make every later atomic write fail as on a full disk or in a read-only folder; returns
    the words the error line must hold."""
    def apply() -> str:
        if request.param == "enospc":
            error = lambda dst: OSError(errno.ENOSPC, "No space left on device")  # noqa: E731
        else:
            error = lambda dst: PermissionError(errno.EACCES, "Permission denied", str(dst))  # noqa: E731
        monkeypatch.setattr(retinaunet.io, "os", _FailingOs(error))
        return "no space left" if request.param == "enospc" else "permission denied"
    return apply


def _one_line(capsys, prog, text):
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: ")]  # besides progress bars
    assert len(lines) == 1 and text in lines[0] and err.endswith(lines[0]), err
    assert "Traceback" not in err


def test_rud_example(data_root, broken_disk, capsys):
    from retinaunet.toy_cli import main

    words = broken_disk()
    assert main(["shapes", "--num-train", "2", "--num-test", "0", "--quiet"]) == 1
    _one_line(capsys, "rud_example", words)


def test_rud_evaluate(tmp_path, broken_disk, capsys):
    from retinaunet.evaluation.cli import main
    from tests.test_evaluation import _toy_folders

    labels, preds = _toy_folders(tmp_path)
    words = broken_disk()
    assert main(["-p", str(preds), "-l", str(labels)]) == 1
    _one_line(capsys, "rud_evaluate", words)


def test_rud_predict(tmp_path, broken_disk, capsys):
    from retinaunet.inference.cli import main

    from tests.test_predict_cli import make_model_folder, write_image

    plans = make_test_plans(dim=2)
    plans.target_spacing = [1.0, 1.0]
    task = tmp_path / "Task000_Test"
    make_model_folder(task, plans)
    inp = tmp_path / "images"
    write_image(inp / "a_0000.nii.gz", np.zeros((64, 64)), (1, 1))
    words = broken_disk()
    assert main(["-t", str(task), "-i", str(inp), "-o", str(tmp_path / "out"), "--device", "cpu", "--folds", "1",
                 "--no-tta"]) == 1
    _one_line(capsys, "rud_predict", words)


def test_rud_train(data_root, broken_disk, capsys):
    from retinaunet.layout import TaskPaths
    from retinaunet.training.cli import main
    from tests.test_loader import write_case

    root = data_root / "Task009_Tiny"
    pre = root / "preprocessed" / "2d"
    pre.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"task": root.name, "dim": 2, "labels": {"0": "a"},
                                                   "modalities": {"0": "CT"}}))
    for i in range(5):
        write_case(pre, f"case{i}", (64, 64), [((32, 32), 7, 0)])
    plans = make_test_plans(dim=2, num_classes=1)
    (root / "plans.json").write_text(json.dumps(plans.to_dict()))
    words = broken_disk()
    assert main(["0", "-t", "9", "--device", "cpu", "--epochs", "1"]) == 1
    _one_line(capsys, "rud_train", words)
    assert not TaskPaths(root).splits.exists()


def test_checkpoint_write_failure_is_an_os_error(tmp_path, monkeypatch):
    import torch

    from retinaunet.model_folder import save_checkpoint

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="checkpoint"):
        save_checkpoint({"a": 1}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


EDITS = {
    "negative patch": ("patch_size", [-64, 64], "patch_size"),
    "string batch": ("batch_size", "2", "batch_size"),
    "no classes": ("num_classes", 0, "num_classes"),
    "anchors null": ("anchors", None, "anchors"),
    "unknown mode": ("mode", "4d", "mode"),
    "negative epochs": ("training", "epochs=-1", "training.epochs"),
    "zero spacing": ("target_spacing", [0.0, 1.0], "target_spacing"),
    "hostile plan name": ("plan_name", "../../x", "plan_name"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_hand_edited_plans_name_the_key(data_root, capsys, edit):
    from retinaunet.training.cli import main

    key, value, named = EDITS[edit]
    root = data_root / "Task009_Tiny"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"task": root.name, "dim": 2, "labels": {"0": "a"},
                                                   "modalities": {"0": "CT"}}))
    plans = make_test_plans(dim=2, num_classes=1).to_dict()
    if key == "training":
        plans["training"]["epochs"] = -1
    else:
        plans[key] = value
    (root / "plans.json").write_text(json.dumps(plans))
    assert main(["0", "-t", "9", "--device", "cpu"]) == 1
    _one_line(capsys, "rud_train", f"{named} ")


def test_invalid_json_plans(data_root, capsys):
    from retinaunet.training.cli import main

    root = data_root / "Task009_Tiny"
    root.mkdir()
    (root / "dataset.json").write_text("{}")
    (root / "plans.json").write_text('{"mode": "2d",')
    assert main(["0", "-t", "9"]) == 1
    _one_line(capsys, "rud_train", "not valid JSON")


def test_zero_spacing_in_a_model_folder(tmp_path, capsys):
    from retinaunet.inference.cli import main

    from tests.test_predict_cli import make_model_folder, write_image

    plans = make_test_plans(dim=2)
    task = tmp_path / "Task000_Test"
    model_dir = make_model_folder(task, plans)
    raw = json.loads((model_dir / "plans.json").read_text())
    raw["target_spacing"] = [0, 1.0]
    (model_dir / "plans.json").write_text(json.dumps(raw))
    inp = tmp_path / "images"
    write_image(inp / "a_0000.nii.gz", np.zeros((64, 64)), (1, 1))
    assert main(["-t", str(task), "-i", str(inp), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 1
    _one_line(capsys, "rud_predict", "target_spacing ")


def test_override_with_a_bad_value(data_root, capsys):
    from retinaunet.training.cli import main

    root = data_root / "Task009_Tiny"
    root.mkdir()
    (root / "dataset.json").write_text("{}")
    save_plans(make_test_plans(dim=2), root / "plans.json")
    assert main(["0", "-t", "9", "--override", "batch_size=0"]) == 1
    _one_line(capsys, "rud_train", "batch_size ")
    assert main(["0", "-t", "9", "--epochs", "-2"]) == 1
    _one_line(capsys, "rud_train", "training.epochs ")


def test_a_write_that_meets_a_full_disk_names_the_file(tmp_path, monkeypatch, capsys):
    from retinaunet.cli_errors import run_command
    from retinaunet.io import write_json

    def dump(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(retinaunet.io.json, "dump", dump)
    assert run_command("rud_x", lambda: write_json({"a": 1}, tmp_path / "out.json")) == 1
    _one_line(capsys, "rud_x", f"{tmp_path / 'out.json'}: no space left")
    assert list(tmp_path.iterdir()) == []
