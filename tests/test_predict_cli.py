from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from retinaunet.inference.cli import (
    InputError,
    OutputExistsError,
    find_input_cases,
    main,
    parse_shard,
    predict_folder,
    shard_cases,
)

from retinaunet.io import write_json
from retinaunet.model_folder import ModelFolder, checkpoint_state, save_checkpoint
from retinaunet.models import build_model
from retinaunet.plans import make_test_plans, save_plans


def save_plans_json(plans, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_plans(plans, path)


def make_model_folder(task_dir, plans, name="retina_unet"):
    """A tiny trained-looking model folder: fold0 with two kept epochs, fold1 with only a last checkpoint."""
    folder = ModelFolder(task_dir / "models" / f"{name}_{plans.plan_name}")
    write_json({"task": plans.task, "dim": plans.data_dim, "labels": {"0": "a", "1": "b"},
                "modalities": {"0": "CT"}}, task_dir / "dataset.json")
    folder.write_plans(plans, task_dir / "dataset.json")
    torch.manual_seed(0)

    def state(epoch):
        model = build_model(name, plans)
        torch.nn.init.zeros_(model.network.cls_head.out.bias)  # random scores near 1/3: boxes survive
        return checkpoint_state(name, plans, model, epoch)

    fold0 = folder.fold(0)
    for epoch in (3, 5):
        save_checkpoint(state(epoch), fold0.path / fold0.epoch_file(epoch))
    fold0.write_best([{"epoch": 5, "val_ap": 0.5, "file": fold0.epoch_file(5)},
                      {"epoch": 3, "val_ap": 0.4, "file": fold0.epoch_file(3)}])
    save_checkpoint(state(1), folder.fold(1).last_checkpoint)
    return folder.path


def write_image(path, array, spacing, origin=None, direction=None):
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing(tuple(reversed(spacing)))
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_shards_are_disjoint_and_cover_all():
    cases = [f"c{i:02d}" for i in range(11)]
    shards = [shard_cases(cases[::-1], i, 3) for i in range(3)]
    assert sorted(sum(shards, [])) == cases
    assert all(not set(a) & set(b) for k, a in enumerate(shards) for b in shards[k + 1:])
    assert shards[0] == ["c00", "c03", "c06", "c09"]
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_model_folder_loading(tmp_path):
    plans = make_test_plans(dim=2, num_classes=2)
    model_dir = make_model_folder(tmp_path / "Task000_Test", plans)
    folder = ModelFolder(model_dir)
    assert folder.available_folds() == [0, 1]
    assert [p.name for p in folder.fold(0).checkpoint_files()] == ["epoch_5.pt", "epoch_3.pt"]
    assert [p.name for p in folder.fold(1).checkpoint_files()] == ["checkpoint_last.pt"]
    models, loaded = folder.load_models()
    assert len(models) == 3 and loaded.plan_name == "2d" and not models[0].training
    assert len(folder.load_models([1])[0]) == 1
    with pytest.raises(RuntimeError, match="not trained"):
        folder.load_models([4])


def test_input_validation_names_the_file(tmp_path):
    plans = make_test_plans(dim=3)
    plans.modalities = {"0": "CT", "1": "PET"}
    inp = tmp_path / "in"
    write_image(inp / "a_0000.nii.gz", np.zeros((4, 8, 8)), (1, 1, 1))
    with pytest.raises(InputError, match=r"a_0001\.nii\.gz: missing modality 1 \(PET\)"):
        find_input_cases(inp, plans)
    write_image(inp / "a_0001.nii.gz", np.zeros((4, 8, 8)), (1, 1, 1))
    assert list(find_input_cases(inp, plans)) == ["a"]
    (inp / "b_0000.nii.gz").write_bytes(b"not an image")
    write_image(inp / "b_0001.nii.gz", np.zeros((4, 8, 8)), (1, 1, 1))
    model_dir = tmp_path / "model"
    save_plans_json(plans, model_dir / "plans.json")
    with pytest.raises(Exception, match=r"b_0000\.nii\.gz.*cannot read"):
        predict_folder(model_dir, inp, tmp_path / "out")
    (inp / "b_0000.nii.gz").unlink()
    (inp / "b_0001.nii.gz").unlink()
    write_image(inp / "c_0000.nii.gz", np.zeros((8, 8)), (1, 1))
    write_image(inp / "c_0001.nii.gz", np.zeros((8, 8)), (1, 1))
    with pytest.raises(InputError, match=r"c_0000\.nii\.gz: image is 2D but the model was trained on 3D"):
        predict_folder(model_dir, inp, tmp_path / "out")
    (inp / "junk.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"junk\.nii\.gz: name must be"):
        find_input_cases(inp, plans)


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    plans = make_test_plans(dim=2)
    task = tmp_path / "Task000_Test"
    make_model_folder(task, plans)
    rc = main(["-t", str(task), "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "missing: input folder not found" in err


def _check_outputs(out, cases, dim):
    for case in cases:
        doc = json.loads((out / f"{case}.json").read_text())
        assert doc["case"] == case and len(doc["shape"]) == dim
        for b in doc["boxes"]:
            assert len(b["box"]) == 2 * dim and len(b["center_world"]) == dim and len(b["size_mm"]) == dim
            assert 0 <= b["class"] < 2 and 0 < b["score"] <= 1
            assert np.all(np.array(b["box"][:dim]) >= 0) and np.all(np.array(b["box"][dim:]) <= doc["shape"])
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert {r["case"] for r in rows} <= set(cases)
    n_boxes = sum(len(json.loads((out / f"{c}.json").read_text())["boxes"]) for c in cases)
    assert len(rows) == n_boxes > 0


@pytest.mark.parametrize("kind", ["2d", "3d", "2dc"])
def test_end_to_end_rud_predict(tmp_path, kind):
    if kind == "2d":
        plans, shape, spacing = make_test_plans(dim=2, num_classes=2), (70, 90), (0.8, 0.8)
    elif kind == "3d":
        plans, shape, spacing = make_test_plans(dim=3, num_classes=2, patch_size=[8, 32, 32]), (8, 36, 32), (2, 1, 1)
    else:
        plans = make_test_plans(dim=2, num_classes=2, mode="2dc", in_channels=3)
        plans.context_slices = 1
        shape, spacing = (5, 64, 70), (2, 1, 1)
    plans.target_spacing = list(spacing)
    task = tmp_path / "Task000_Test"
    make_model_folder(task, plans)
    save_plans_json(plans, task / "plans.json")
    inp, out = tmp_path / "images", tmp_path / "preds"
    rng = np.random.default_rng(0)
    for case in ("b", "a", "c"):
        write_image(inp / f"{case}_0000.nii.gz", rng.normal(size=shape), spacing)
    args = ["-t", str(task), "-i", str(inp), "-o", str(out), "--device", "cpu", "--folds", "0"]
    assert main([*args, "--shard", "0/2", "--save-seg", "--save-boxes"]) == 0
    assert sorted(p.name for p in out.glob("*.json") if not p.name.endswith(".mrk.json")) == ["a.json", "c.json"]
    assert not (out / "gallery.png").exists()  # shards of one run do not race for the picture
    assert main([*args, "--shard", "1/2", "--no-tta"]) == 0
    _check_outputs(out, ["a", "b", "c"], len(shape))
    seg = sitk.ReadImage(str(out / "a_seg.nii.gz"))
    assert tuple(reversed(seg.GetSize())) == shape
    np.testing.assert_allclose(seg.GetSpacing(), tuple(reversed(spacing)), rtol=1e-6)
    assert tuple(reversed(sitk.ReadImage(str(out / "c_boxes.nii.gz")).GetSize())) == shape


def test_refuses_to_overwrite(tmp_path, capsys):
    plans = make_test_plans(dim=2, num_classes=2)
    plans.target_spacing = [1.0, 1.0]
    task = tmp_path / "Task000_Test"
    model_dir = make_model_folder(task, plans)
    inp, out = tmp_path / "images", tmp_path / "preds"
    write_image(inp / "a_0000.nii.gz", np.random.default_rng(0).normal(size=(64, 64)), (1, 1))
    written = predict_folder(model_dir, inp, out, [1], mirror=False, progress=False)
    assert written == [out / "a.json"] and (out / "gallery.png").read_bytes()[:4] == b"\x89PNG"
    before = (out / "a.json").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match=r"a\.json exists.*--overwrite"):
        predict_folder(model_dir, inp, out, [1], mirror=False, progress=False)
    rc = main(["-t", str(task), "-i", str(inp), "-o", str(out), "--plan", "2d", "--device", "cpu", "--folds", "1"])
    assert rc == 1 and "--overwrite" in capsys.readouterr().err
    assert (out / "a.json").stat().st_mtime_ns == before
    assert main(["-t", str(task), "-i", str(inp), "-o", str(out), "--plan", "2d", "--device", "cpu", "--folds", "1",
                 "--overwrite", "--consolidation", "nms"]) == 0


def test_model_folder_carries_the_converted_case_names(tmp_path):
    """A moved model folder still names cases by their original names (e.g. LUNA16 seriesuids)."""
    from retinaunet.convert import load_case_names
    from retinaunet.layout import CASE_NAMES

    plans = make_test_plans(dim=2)
    task_dir = tmp_path / "Task000_Test"
    task_dir.mkdir()
    write_json({"1_2_3": "1.2.3"}, task_dir / CASE_NAMES)
    folder = make_model_folder(task_dir, plans)
    moved = tmp_path / "elsewhere" / "deep" / "er" / "model"
    moved.parent.mkdir(parents=True)
    folder.rename(moved)
    assert load_case_names(moved) == {"1_2_3": "1.2.3"}
