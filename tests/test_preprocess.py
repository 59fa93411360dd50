"""Preprocessing: resampling against scipy references, instance preservation, normalisation, the exact
box inverse, and `rud_preprocess` (store format, resume, force, failures)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from retinaunet.preprocessing.cli import main as preprocess_main
from retinaunet.preprocessing.normalize import normalize_channel
from retinaunet.preprocessing.preprocess import preprocess_case
from retinaunet.preprocessing.resample import resample_array, resample_labels, resampled_shape, source_coordinates
from retinaunet.preprocessing.task import preprocess_task
from scipy import ndimage

from retinaunet.coordinates import CaseCoordinates
from retinaunet.crop import nonzero_box
from retinaunet.io import Geometry, read_case
from retinaunet.plans import Plans, make_test_plans, save_plans
from retinaunet.toy import Toy3DConfig, write_toy_task


def _reference(a: np.ndarray, spacing, target, order: int) -> np.ndarray:
    shape = resampled_shape(a.shape, spacing, target)
    f = np.asarray(target) / np.asarray(spacing)
    grid = np.meshgrid(*[source_coordinates(n, fi) for n, fi in zip(shape, f)], indexing="ij")
    return ndimage.map_coordinates(a.astype(np.float64), grid, order=order, mode="mirror")


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("shape,spacing,target", [
    ((13, 17, 19), (2.5, 0.7, 0.9), (1.25, 1.0, 0.45)),
    ((1, 5, 30), (3.0, 1.0, 1.0), (1.0, 1.3, 0.5)),
    ((40, 31), (1.0, 1.0), (0.5, 2.0)),
])
def test_separable_resampling_equals_full_spline_interpolation(shape, spacing, target, order):
    a = np.random.default_rng(0).random(shape).astype(np.float32)
    out = resample_array(a, spacing, target, order=order)
    ref = _reference(a, spacing, target, order)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-5


def test_resampling_identity_and_smooth_accuracy():
    a = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
    assert np.array_equal(resample_array(a, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)), a)
    n, s, t = 40, 2.5, 1.25  # a smooth profile along z sampled at 2.5 mm, resampled to 1.25 mm
    z_in = (np.arange(n) + 0.5) * s
    vol = np.broadcast_to(np.sin(z_in / 6.0)[:, None, None], (n, 4, 4)).astype(np.float32)
    out = resample_array(vol, (s, 1, 1), (t, 1, 1))
    z_out = (np.arange(out.shape[0]) + 0.5) * t
    inner = (z_out > 12) & (z_out < n * s - 12)  # the mirror boundary disturbs the first few voxels
    assert np.abs(out[inner, 0, 0] - np.sin(z_out[inner] / 6.0)).max() < 2e-3


def test_labels_nearest_and_no_instance_vanishes():
    inst = np.zeros((20, 40, 40), np.int32)
    inst[10:14, 20:30, 20:30] = 2
    inst[5, 11, 11] = 1  # one voxel, far smaller than an output voxel
    out, restored = resample_labels(inst, (1.0, 0.5, 0.5), (3.0, 2.0, 2.0))
    assert restored == [1] and set(np.unique(out)) == {0, 1, 2}
    assert np.argwhere(out == 1).tolist() == [[1, 2, 2]]  # the output voxel holding its centre
    rng = np.random.default_rng(0)
    many = np.zeros((30, 60, 60), np.int32)
    for i in range(1, 40):
        z, y, x = rng.integers(0, [30, 60, 60])
        many[z, y, x] = i
    out, _ = resample_labels(many, (1.0, 1.0, 1.0), (2.7, 3.1, 2.2))
    assert set(np.unique(out)) == set(np.unique(many))


def test_normalisation_schemes():
    x = np.array([-2000, -1000, 0, 40, 100, 3000], dtype=np.int16)
    ct = normalize_channel(x, {"scheme": "ct", "clip": [-1000, 1000], "mean": 0.0, "std": 500.0})
    assert np.allclose(ct, [-2, -2, 0, 0.08, 0.2, 2])
    z = normalize_channel(np.random.default_rng(0).normal(5, 3, 1000), {"scheme": "zscore"})
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4


def _oblique_case():
    """Anisotropic spacing, zero border (crop), rotated direction, one cuboid object."""
    shape = (20, 60, 50)
    img = np.zeros(shape, np.float32)
    img[2:18, 6:56, 4:48] = np.random.default_rng(0).normal(100, 10, (16, 50, 44))
    inst = np.zeros(shape, np.int32)
    inst[6:10, 20:32, 10:22] = 1
    c, s = np.cos(0.4), np.sin(0.4)
    direction = (c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c)
    geom = Geometry((3.0, 0.5, 0.5), (12.5, -40.0, 7.25), direction, shape)
    return img, inst, geom


def _plans(target_spacing: list[float]) -> Plans:
    plans = make_test_plans(dim=3)
    plans.target_spacing = target_spacing
    return plans


def test_box_round_trip_lands_on_the_original_voxels():
    img, inst, geom = _oblique_case()
    plans = _plans([1.5, 1.0, 1.0])
    data, seg, props = preprocess_case(img[None], geom, plans, inst, {1: 0}, case="oblique")
    coords = CaseCoordinates.from_props(props)
    assert props["crop"] == [[2, 18], [6, 56], [4, 48]]
    assert data.shape == (1, 32, 25, 22) and seg.shape == (32, 25, 22)
    box = np.asarray(props["boxes"]["1"])
    assert np.array_equal(coords.to_original(box)[0], [6, 20, 10, 10, 32, 22])  # exactly the object's voxels
    assert np.allclose(coords.to_preprocessed(coords.to_original(box))[0], box)
    # world: the centre agrees with SimpleITK's own index -> physical mapping of the original image
    image = sitk.GetImageFromArray(img)
    geom.apply_to(image)
    centre, size = coords.to_world(coords.to_original(box))
    centre, size = centre[0], size[0]
    expected = image.TransformContinuousIndexToPhysicalPoint([15.5, 25.5, 7.5])  # (x, y, z) voxel centre
    assert np.allclose(centre, expected) and np.allclose(size, [12.0, 6.0, 6.0])


def test_box_inverse_with_uneven_factors_is_within_half_an_output_voxel():
    img, inst, geom = _oblique_case()
    plans = _plans([1.1, 0.7, 1.3])
    _, _, props = preprocess_case(img[None], geom, plans, inst, {1: 0})
    back = CaseCoordinates.from_props(props).to_original(np.asarray(props["boxes"]["1"]), clip=False)[0]
    f = np.tile(np.asarray(plans.target_spacing) / np.asarray(geom.spacing), 2)
    assert np.all(np.abs(back - np.array([6, 20, 10, 10, 32, 22])) <= f / 2 + 1e-9)


def test_nonzero_box_whole_image_when_empty():
    assert nonzero_box(np.zeros((1, 4, 5))) == [[0, 4], [0, 5]]


@pytest.fixture
def toy_task(tmp_path):
    task = write_toy_task("spheres", tmp_path, config=Toy3DConfig(num_train=4, num_test=1), progress=False)
    plans = make_test_plans(dim=3)
    plans.target_spacing = [2.0, 1.0, 1.0]
    plans.normalization = [{"scheme": "ct", "clip": [-500.0, 500.0], "mean": 0.0, "std": 200.0}]
    save_plans(plans, task / "plans.json")
    return task


def test_preprocess_task_store_resume_force(toy_task, capsys):
    report = preprocess_task(toy_task, workers=0)
    out = toy_task / "preprocessed" / "3d"
    assert sorted(report.done) == [f"case_{i:04d}" for i in range(4)] and not report.failed
    meta = json.loads((out / "case_0001.json").read_text())
    assert set(meta) >= {"case", "original", "crop", "spacing", "shape", "instances", "boxes"}
    data = np.load(out / "case_0001.npy", mmap_mode="r")
    seg = np.load(out / "case_0001_seg.npy", mmap_mode="r")
    assert data.dtype == np.float32 and seg.dtype == np.int32 and list(data.shape[1:]) == meta["shape"]
    assert set(meta["boxes"]) == {str(i) for i in np.unique(seg) if i}
    images, geom = read_case([toy_task / "raw_splitted" / "imagesTr" / "case_0001_0000.nii.gz"])
    assert meta["original"]["shape"] == list(geom.shape)
    # resume: nothing to do; an interrupted case (json missing) is redone; --force redoes all
    assert preprocess_task(toy_task, workers=0).done == []
    (out / "case_0002.json").unlink()
    assert preprocess_task(toy_task, workers=0).done == ["case_0002"]
    assert len(preprocess_task(toy_task, workers=0, force=True).done) == 4
    # a changed raw file makes its case out of date
    label = toy_task / "raw_splitted" / "labelsTr" / "case_0003.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(label)), str(label), False)
    assert preprocess_task(toy_task, workers=0).done == ["case_0003"]


def test_failing_case_is_named_and_others_go_on(toy_task, monkeypatch, capsys):
    (toy_task / "raw_splitted" / "imagesTr" / "case_0001_0000.nii.gz").write_bytes(b"not an image")
    monkeypatch.setenv("RUD_DATA", str(toy_task.parent))
    assert preprocess_main(["-t", toy_task.name, "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "case_0001" in err and "failed" in err
    out = toy_task / "preprocessed" / "3d"
    assert not (out / "case_0001.json").exists()
    assert all((out / f"case_{i:04d}.json").exists() for i in (0, 2, 3))


def test_plan_and_preprocess_end_to_end_2d_toy_and_thin_slices(tmp_path, monkeypatch):
    from retinaunet.planning.cli import main as plan_main

    from retinaunet.toy import Toy2DConfig
    from tests.test_planner import write_thin_slice_task

    monkeypatch.setenv("RUD_DATA", str(tmp_path))
    toy = write_toy_task("shapes", tmp_path, config=Toy2DConfig(num_train=3, num_test=1), progress=False)
    thin = write_thin_slice_task(tmp_path, num_cases=3)
    for task, plan_name, data_dims in ((toy, "2d", 2), (thin, "2dc", 3)):
        assert plan_main(["-t", task.name, "--workers", "0"]) == 0
        assert preprocess_main(["-t", task.name, "--workers", "0"]) == 0
        out = task / "preprocessed" / plan_name
        metas = sorted(out.glob("*.json"))
        assert len(metas) == 3
        meta = json.loads(metas[0].read_text())
        data = np.load(out / f"{meta['case']}.npy", mmap_mode="r")
        assert data.ndim == data_dims + 1 and abs(float(np.mean(data))) < 0.2  # z-scored per case
        assert len(meta["boxes"]) >= 1 and all(len(b) == 2 * data_dims for b in meta["boxes"].values())
    # a new image of the thin-slice task through the same code, as rud_predict uses it
    from retinaunet.preprocessing.preprocess import preprocess_image_files

    from retinaunet.plans import load_plans

    plans = load_plans(thin / "plans.json")
    data, props = preprocess_image_files([thin / "raw_splitted" / "imagesTr" / "c00_0000.nii.gz"], plans, "c00")
    stored = np.load(thin / "preprocessed" / "2dc" / "c00.npy")
    meta = json.loads((thin / "preprocessed" / "2dc" / "c00.json").read_text())
    assert np.allclose(data, stored) and props["crop"] == meta["crop"] and props["shape"] == meta["shape"]
