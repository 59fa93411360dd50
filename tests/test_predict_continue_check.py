"""rud_predict --continue finishes only the same run: JSONs written by another model folder or with other
settings are refused with one line, before any case is predicted."""

from __future__ import annotations

import shutil

import pytest
from retinaunet.inference.cli import OutputExistsError, main, predict_folder

from tests.test_predict_resume import _interrupt_after, setup  # noqa: F401  (the fixture)

KW = dict(folds=[1], mirror=False, progress=False)


def _interrupted(model_dir, inp, out, monkeypatch):
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            predict_folder(model_dir, inp, out, **KW)
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json"]


def test_continue_refuses_the_jsons_of_another_model_folder(setup, tmp_path, monkeypatch):  # noqa: F811
    task, model_dir, inp = setup
    out = tmp_path / "out"
    _interrupted(model_dir, inp, out, monkeypatch)
    other = shutil.copytree(model_dir, tmp_path / "elsewhere" / model_dir.name)  # same weights, another folder
    with pytest.raises(OutputExistsError) as info:
        predict_folder(other, inp, out, resume=True, **KW)
    message = str(info.value)
    assert "\n" not in message and "a.json" in message and str(model_dir) in message and str(other) in message
    assert "--overwrite" in message
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json"]  # nothing predicted


@pytest.mark.parametrize("change,word", [(dict(overrides=["min_score=0.3"]), "min_score"),
                                         (dict(folds=[0]), "folds"),
                                         (dict(mirror=True), "mirror")])
def test_continue_refuses_other_settings(setup, tmp_path, monkeypatch, change, word):  # noqa: F811
    task, model_dir, inp = setup
    out = tmp_path / "out"
    _interrupted(model_dir, inp, out, monkeypatch)
    with pytest.raises(OutputExistsError, match=word) as info:
        predict_folder(model_dir, inp, out, resume=True, **{**KW, **change})
    assert "\n" not in str(info.value) and "a.json" in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json"]
    predict_folder(model_dir, inp, out, resume=True, **KW)  # the same settings finish the run
    assert sorted(p.name for p in out.glob("*.json")) == ["a.json", "b.json", "c.json", "d.json"]


def test_continue_with_other_settings_is_one_line_from_the_cli(setup, tmp_path, monkeypatch, capsys):  # noqa: F811
    task, model_dir, inp = setup
    out = tmp_path / "out"
    _interrupted(model_dir, inp, out, monkeypatch)
    assert main(["-t", str(task), "-i", str(inp), "-o", str(out), "--device", "cpu", "--folds", "1", "--no-tta",
                 "--continue", "--override", "min_score=0.3"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a.json" in err and "min_score" in err, err
    assert main(["-t", str(task), "-i", str(inp), "-o", str(out), "--device", "cpu", "--folds", "1", "--no-tta",
                 "--continue"]) == 0
