"""Planner: the rules for spacing, mode, topology, anchors, normalisation and training, on the toy tasks
and on a task with spacing and object sizes unlike the toys; `rud_plan` end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from retinaunet.planning.anchors_plan import anchor_shapes, best_anchor_iou, optimise_anchors
from retinaunet.planning.budget import cpu_budget, gpu_budget
from retinaunet.planning.cli import main as plan_main
from retinaunet.planning.fingerprint import load_or_compute_fingerprint
from retinaunet.planning.memory import estimate_flops, estimate_memory
from retinaunet.planning.pipeline import plan_task
from retinaunet.planning.planner import (
    BATCH_NORM_MIN_BATCH,
    choose_mode,
    choose_target_spacing,
    object_sizes,
    plan_from_fingerprint,
)
from retinaunet.planning.topology import plan_strides

from retinaunet.anchors import AnchorGenerator
from retinaunet.boxes import box_iou
from retinaunet.dataset import DatasetError
from retinaunet.models import build_model
from retinaunet.plans import MatchingPlan, cumulative_stride, load_plans
from retinaunet.toy import Toy2DConfig, Toy3DConfig, write_toy_task


@pytest.fixture(scope="module")
def toy2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    task = write_toy_task("shapes", root, config=Toy2DConfig(num_train=8, num_test=1), progress=False)
    return task, load_or_compute_fingerprint(task)[0]


@pytest.fixture(scope="module")
def toy3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    task = write_toy_task("spheres", root, config=Toy3DConfig(num_train=8, num_test=1), progress=False)
    return task, load_or_compute_fingerprint(task)[0]


def write_thin_slice_task(root, num_cases: int = 6, seed: int = 0):
    """An MRI-like 3D task unlike the toys: 5-6 mm slices, 0.5 mm pixels, small lesions, oblique direction."""
    rng = np.random.default_rng(seed)
    task = root / "Task201_ThinLesions"
    (task / "raw_splitted" / "imagesTr").mkdir(parents=True)
    (task / "raw_splitted" / "labelsTr").mkdir(parents=True)
    (task / "dataset.json").write_text(json.dumps({"task": task.name, "dim": 3, "labels": {"0": "lesion"},
                                                   "modalities": {"0": "T2"}, "test_labels": False}))
    c, s = np.cos(0.3), np.sin(0.3)
    for k in range(num_cases):
        spacing = (float(rng.choice([5.0, 5.5, 6.0])), 0.5, 0.5)
        shape = (12, 96, 96)
        img = rng.normal(300, 40, shape).astype(np.int16)
        inst = np.zeros(shape, np.int16)
        for i in range(1, 3):
            r_mm = rng.uniform(2.0, 6.0)
            cz, cy, cx = rng.uniform([3, 20, 20], [9, 76, 76])
            zz, yy, xx = np.ogrid[:12, :96, :96]
            ball = (((zz - cz) * spacing[0]) ** 2 + ((yy - cy) * 0.5) ** 2 + ((xx - cx) * 0.5) ** 2) <= r_mm ** 2
            ball[int(round(cz)), int(round(cy)), int(round(cx))] = True
            inst[ball & (inst == 0)] = i
            img[ball] += 200
        for arr, path in ((img, task / "raw_splitted" / "imagesTr" / f"c{k:02d}_0000.nii.gz"),
                          (inst, task / "raw_splitted" / "labelsTr" / f"c{k:02d}.nii.gz")):
            im = sitk.GetImageFromArray(arr)
            im.SetSpacing(spacing[::-1])
            im.SetDirection((c, -s, 0, s, c, 0, 0, 0, 1))
            sitk.WriteImage(im, str(path))
        ids = [int(i) for i in np.unique(inst) if i]
        (task / "raw_splitted" / "labelsTr" / f"c{k:02d}.json").write_text(
            json.dumps({"instances": {str(i): 0 for i in ids}}))
    return task


def test_target_spacing_median_and_anisotropic_percentile():
    iso = np.array([[1.0, 1.0, 1.0], [1.2, 0.8, 0.8], [0.8, 1.0, 1.0]])
    assert choose_target_spacing(iso)[0] == [1.0, 1.0, 1.0]
    aniso = np.array([[5.0, 0.5, 0.5]] * 5 + [[2.0, 0.5, 0.5]] * 5 + [[6.0, 0.6, 0.6]] * 10)
    target, reason = choose_target_spacing(aniso)
    assert target[0] == pytest.approx(np.percentile(aniso[:, 0], 10)) and target[0] < np.median(aniso[:, 0])
    assert target[1:] == [0.55, 0.55] and "anisotropic" in reason


def test_mode_rules():
    assert choose_mode(2, [1.0, 1.0])[0] == "2d"
    assert choose_mode(3, [2.5, 0.8, 0.8])[0] == "3d"
    assert choose_mode(3, [5.0, 0.5, 0.5])[0] == "2dc"
    assert choose_mode(3, [5.0, 0.5, 0.5], "3d") == ("3d", "set by --mode")
    with pytest.raises(ValueError):
        choose_mode(2, [1.0, 1.0], "2dc")


def test_strides_respect_anisotropy_and_patch_divisibility():
    strides = plan_strides([32, 128, 128], [2.5, 0.7, 0.7])
    # z waits until in-plane is within 1.5x of it: 0.7 -> 1.4 (z 2.5 is 1.8x) -> 2.8
    assert strides[:3] == [[1, 2, 2], [1, 2, 2], [2, 2, 2]]
    assert cumulative_stride(strides) == [8, 32, 32]
    chest = plan_strides([96, 224, 224], [1.25, 0.7, 0.7])
    assert chest[0] == [1, 2, 2] and chest[1] == [2, 2, 2]  # 1.25 mm is 1.8x 0.7 mm: not pooled at first
    assert plan_strides([128, 128], [1.0, 1.0]) == [[2, 2]] * 5


def test_plan_2d_toy_cpu_and_gpu(toy2d):
    _, fp = toy2d
    plans = plan_from_fingerprint(fp, budget=cpu_budget(2))
    assert plans.mode == "2d" and plans.dim == 2 and plans.in_channels == 1 and plans.target_spacing == [1.0, 1.0]
    assert plans.patch_size == [64, 64]  # about 1.5 object diameters (41 px), a multiple of the stride
    assert 2 <= plans.batch_size <= 32
    net = plans.network
    assert net.block == "basic" and net.start_channels <= 16 and net.fpn_channels <= 64
    assert estimate_flops(plans) <= cpu_budget(2).step_flops
    assert plans.anchors.coverage == 1.0
    assert plans.matching == MatchingPlan(method="iou", iou_low=0.4, iou_high=0.5)  # the grid covers the circles
    assert plans.normalization == [{"scheme": "zscore"}]
    assert plans.training.learning_rate == 1e-3  # the short CPU schedule
    # batch norm, so whole images can be predicted in one pass
    assert plans.network.norm == "batch" and plans.inference.patch_size == [320, 320]
    assert set(plans.reasons) >= {"target_spacing", "mode", "patch_size", "anchors", "normalization", "training"}
    gpu = plan_from_fingerprint(fp, budget=gpu_budget(11))
    assert gpu.network.block == "bottleneck" and gpu.network.blocks_per_stage == [3, 4, 6, 3]
    assert gpu.network.start_channels == 48 and gpu.patch_size == [320, 320]  # the whole image
    assert gpu.training.learning_rate == 1e-4  # the paper's, for the long GPU schedule
    assert gpu.network.norm == "instance" and gpu.inference.patch_size == gpu.patch_size
    assert estimate_memory(gpu) <= gpu_budget(11).memory


def test_planned_matching_trains_finer_anchors_inside_objects_as_negatives(toy2d):
    """With the paper's 2D threshold (0.1) the P2 anchors inside a toy object (IoU about 0.25 with it) were
    ignored, never trained, and at test time fired with half-size boxes; the planned matching makes every
    anchor either positive or negative except the narrow 0.4-0.5 band."""
    plans = plan_from_fingerprint(toy2d[1], budget=cpu_budget(2))
    det = build_model("retina_unet", plans)
    shape = plans.patch_size
    with torch.no_grad():
        out = det.network(torch.zeros(1, plans.in_channels, *shape))
    anchors = det.anchors(shape, out.feature_shapes, "cpu")
    c = shape[0] / 2
    gt = torch.tensor([[c - 20.0, c - 20.0, c + 20.0, c + 20.0]])
    targets, positive, _ = det.assign_targets(anchors, [gt], [torch.tensor([1])], shape)
    iou = box_iou(gt, anchors)[0]
    inside = (anchors[:, :2] >= gt[0, :2]).all(1) & (anchors[:, 2:] <= gt[0, 2:]).all(1)
    assert (inside & (iou < 0.4)).sum() > 0  # finer-level anchors within the object exist
    assert (targets[0][inside & (iou < 0.4)] == 0).all()  # ... and are negatives
    assert (targets[0][iou < 0.4] != -1).all() and positive.sum() > 0


def test_plan_3d_toy(toy3d):
    _, fp = toy3d
    plans = plan_from_fingerprint(fp, budget=cpu_budget(3))
    assert plans.mode == "3d" and plans.dim == 3 and plans.target_spacing == [2.5, 0.8, 0.8]
    cum = cumulative_stride(plans.network.strides)
    assert all(p % c == 0 for p, c in zip(plans.patch_size, cum))
    assert plans.network.strides[0] == [1, 2, 2]  # z (2.5 mm) is not pooled first
    assert plans.patch_size[0] < plans.patch_size[1]  # fewer voxels along the coarse axis
    assert plans.anchors.coverage == 1.0
    assert all(z < b for z, b in zip(plans.anchors.z_base_sizes, plans.anchors.base_sizes))
    norm = plans.normalization[0]
    ct = fp["intensity"][0]
    assert norm["scheme"] == "ct" and norm["clip"] == [round(ct["p0.5"], 4), round(ct["p99.5"], 4)]
    assert plans.matching.iou_low == 0.4 and plans.inference.pre_nms_top_k == 50000


def test_cpu_patch_shrinks_towards_the_objects_for_a_batch_norm_batch(toy3d):
    """A CPU step budget that leaves the context patch a batch under 5 shrinks the patch (not below the objects'
    95th-percentile size) until 5 fit, with batch norm; a budget too small even at the objects' size keeps the
    fitted patch, its small batch and instance norm; a GPU plan is untouched."""
    fp = json.loads(json.dumps(toy3d[1]))
    fp["cases"] = fp["cases"] * 8  # a dataset large enough that 5% of its voxels do not cap the batch
    budget = cpu_budget(3)
    roomy = plan_from_fingerprint(fp, budget=budget)
    assert roomy.batch_size >= BATCH_NORM_MIN_BATCH and roomy.network.norm == "batch"
    assert "so a batch of" not in roomy.reasons["patch_size"]
    large = np.percentile(object_sizes(fp, roomy.target_spacing, [0, 1, 2]), 95, axis=0)
    tight = dataclasses.replace(budget, step_flops=estimate_flops(roomy) * 3 / roomy.batch_size)
    shrunk = plan_from_fingerprint(fp, budget=tight)
    assert shrunk.batch_size >= BATCH_NORM_MIN_BATCH and shrunk.network.norm == "batch"
    assert math.prod(shrunk.patch_size) < math.prod(roomy.patch_size)
    assert all(p >= s - c for p, s, c in zip(shrunk.patch_size, large, cumulative_stride(shrunk.network.strides)))
    assert estimate_flops(shrunk) <= tight.step_flops
    assert f"so a batch of {BATCH_NORM_MIN_BATCH} fits" in shrunk.reasons["patch_size"]
    assert shrunk.inference.patch_size != shrunk.patch_size  # batch norm predicts whole images
    starved = dataclasses.replace(budget, step_flops=estimate_flops(roomy) / roomy.batch_size)
    small = plan_from_fingerprint(fp, budget=starved)
    assert small.batch_size < BATCH_NORM_MIN_BATCH and small.network.norm == "instance"
    assert "so a batch of" not in small.reasons["patch_size"] and small.inference.patch_size == small.patch_size
    few = plan_from_fingerprint(toy3d[1], budget=tight)  # 8 cases: 5% of their voxels cap the batch at 2 anyway
    assert few.batch_size < BATCH_NORM_MIN_BATCH and "so a batch of" not in few.reasons["patch_size"]
    assert few.patch_size == roomy.patch_size  # not shrunk for nothing: batch 3 fits the context patch
    gpu = plan_from_fingerprint(fp, budget=gpu_budget(11))
    assert gpu.network.norm == "instance" and "so a batch of" not in gpu.reasons["patch_size"]


def test_plan_thin_slice_task_unlike_toys(tmp_path):
    task = write_thin_slice_task(tmp_path)
    fp, _ = load_or_compute_fingerprint(task)
    plans = plan_from_fingerprint(fp, budget=cpu_budget(2))
    z = [c["spacing"][0] for c in fp["cases"]]
    assert plans.target_spacing[1:] == [0.5, 0.5] and plans.target_spacing[0] == pytest.approx(np.percentile(z, 10))
    assert plans.mode == "2dc" and plans.dim == 2 and plans.data_dim == 3
    assert plans.context_slices == 3 and plans.in_channels == 7 and len(plans.patch_size) == 2
    assert plans.normalization == [{"scheme": "zscore"}]  # T2 is not CT
    assert plans.anchors.z_base_sizes is None and plans.anchors.coverage >= 0.9
    # three distinct strides on a 40 x 40 patch: fewer anchor sizes, but every object gets positives
    assert all(row["matched"] == 1.0 for row in plans.anchors.coverage_by_size.values() if row["objects"])
    assert min(plans.anchors.base_sizes) < 12  # lesions of 4-12 mm at 0.5 mm are 8-24 px
    assert all(p <= 96 for p in plans.patch_size)
    three_d = plan_from_fingerprint(fp, mode="3d", budget=cpu_budget(3))
    assert three_d.dim == 3 and three_d.network.strides[0][0] == 1  # 5 mm axis is not pooled early


@pytest.mark.parametrize("dim,spacing", [(2, (1.0, 1.0)), (3, (1.0, 1.0, 1.0)), (3, (2.5, 0.7, 0.7))])
def test_anchor_coverage_from_two_voxels_to_half_the_patch(dim, spacing):
    patch = [64, 128, 128][-dim:] if dim == 3 else [128, 128]
    if spacing[0] > 1:
        patch = [32, 128, 128]
    diam = np.geomspace(2 * min(spacing), 0.5 * min(p * s for p, s in zip(patch, spacing)), 300)
    sp = np.asarray(spacing)
    sizes = np.maximum(1.0, np.round(diam[:, None] / sp[None]))
    sizes[:, -2:] = np.maximum(sizes[:, -2:], 2)  # at least 2 voxels in-plane
    plan = optimise_anchors(sizes, dim, patch_size=patch)
    assert plan.coverage == 1.0
    iou = best_anchor_iou(sizes, anchor_shapes(plan.base_sizes, plan.z_base_sizes))
    assert iou.min() >= 0.5


def test_anchor_shapes_match_anchor_generator():
    gen = AnchorGenerator([4.0, 9.0], [1.5, 3.0], dim=3)
    ours = anchor_shapes([4.0, 9.0], [1.5, 3.0])
    theirs = np.concatenate([gen.cell_sizes(level).numpy() for level in range(2)])
    assert np.allclose(np.sort(ours, axis=0), np.sort(theirs, axis=0))


def _plan_error(task, override, capsys):
    capsys.readouterr()
    assert plan_main(["-t", task.name, "--override", override]) == 1
    return capsys.readouterr().err


def test_rud_plan_cli_rerun_overrides_and_bad_dataset(toy2d, tmp_path, monkeypatch, capsys):
    task = shutil.copytree(toy2d[0], tmp_path / toy2d[0].name)
    monkeypatch.setenv("RUD_DATA", str(tmp_path))
    assert plan_main(["-t", task.name, "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "patch size" in out and "anchors" in out
    plans_file, fp_file = task / "plans.json", task / "fingerprint.json"
    before = plans_file.stat().st_mtime_ns, fp_file.stat().st_mtime_ns
    plans, written = plan_task(task)
    assert not written  # nothing changed, nothing rewritten
    assert (plans_file.stat().st_mtime_ns, fp_file.stat().st_mtime_ns) == before
    assert plan_main(["-t", task.name, "--mode", "2dc"]) == 1  # 2D images have no neighbouring slices
    assert "needs 3D images" in capsys.readouterr().err
    assert plan_main(["-t", task.name, "--override", "training.epochs=3", "--override", "batch_size=4"]) == 0
    plans = load_plans(plans_file)
    assert plans.training.epochs == 3 and plans.batch_size == 4
    assert plans.reasons["training.epochs"] == "set by --override"
    assert plans.reasons["training"].startswith("training.epochs set by --override; planned:")  # not stale
    assert "training.epochs must be a positive integer, got -3" in _plan_error(task, "training.epochs=-3", capsys)
    assert plan_main(["-t", task.name, "--override", "patch_size=[100,100]"]) == 1  # not a stride multiple
    assert "divisible" in capsys.readouterr().err
    (task / "raw_splitted" / "labelsTr" / "case_0000.json").write_text('{"instances": {}}')
    with pytest.raises(DatasetError, match="case_0000.json"):
        plan_task(task)
    assert plan_main(["-t", task.name]) == 1


def test_inference_tile_whole_image_on_cpu_training_patch_on_gpu(toy2d):
    _, fp = toy2d
    cpu = plan_from_fingerprint(fp, budget=cpu_budget(2))
    assert cpu.patch_size[0] < 320 and cpu.inference.patch_size == [320, 320]
    assert "whole median image" in cpu.reasons["inference_patch"]
    gpu = plan_from_fingerprint(fp, budget=gpu_budget(11))
    assert gpu.inference.patch_size == gpu.patch_size
    stride = cumulative_stride(cpu.network.strides)
    assert all(p % s == 0 for p, s in zip(cpu.inference.patch_size, stride))


def test_cpu_ensemble_and_epochs_follow_the_cost_of_a_case(toy2d, toy3d):
    """A cheap case keeps the whole ensemble (checkpoints x mirrored views); a case of many tiles on a CPU
    keeps one view of the best checkpoint and validates in 5 longer epochs; a GPU keeps everything."""
    cheap = plan_from_fingerprint(toy2d[1], budget=cpu_budget(2))  # one 320 x 320 tile per image
    assert cheap.inference.checkpoints is None and cheap.inference.mirror is True
    assert cheap.training.epochs == 10 and "longer epochs" not in cheap.reasons["training"]
    _, fp = toy3d
    big = json.loads(json.dumps(fp))
    for case in big["cases"]:  # CT-sized volumes: many tiles of the CPU patch
        case["crop_shape"] = [4 * s for s in case["crop_shape"]]
        case["shape"] = list(case["crop_shape"])
    costly = plan_from_fingerprint(big, budget=cpu_budget(3))
    assert costly.inference.checkpoints == 1 and costly.inference.mirror is False
    assert "1 checkpoint(s) x 1 view(s)" in costly.reasons["ensemble"]
    assert costly.training.epochs == 5 and "5 longer epochs" in costly.reasons["training"]
    assert cheap.training.val_interval == 1 and "validation every" not in cheap.reasons["training"]
    gpu = plan_from_fingerprint(big, budget=gpu_budget(11))
    assert gpu.inference.checkpoints is None and gpu.inference.mirror is True


def test_validation_of_whole_scans_is_spaced_to_stay_within_its_share_of_training():
    """Validating full-size scans (thousands of tiles) after every epoch would cost more than the training."""
    from retinaunet.planning.planner import CPU_TRAIN_SECONDS, CPU_VAL_SHARE, _training

    share = CPU_VAL_SHARE * CPU_TRAIN_SECONDS
    cheap, _ = _training(cpu_budget(3), 1e10, val_seconds=share / 20)
    assert cheap.val_interval == 1
    scan, why = _training(cpu_budget(3), 1e10, val_seconds=300.0)  # the chest CT plan's estimate: ~300 s
    validations = math.ceil(scan.epochs / scan.val_interval)
    assert scan.val_interval > 1 and "validation only after the last epoch" in why  # 300 s: one is the share
    every, why = _training(cpu_budget(3), 1e10, val_seconds=share / 4)
    assert every.val_interval == 2 and "validation every 2 epochs and after the last" in why
    assert validations * 300.0 <= share or scan.val_interval == scan.epochs  # within the share, or only the last


def test_ensemble_rule_prefers_more_views_within_the_budget():
    from retinaunet.planning.planner import CPU_CASE_SECONDS, _inference_ensemble

    per_view = CPU_CASE_SECONDS / 6  # 8 mirrored views do not fit, 5 checkpoints do
    assert _inference_ensemble(cpu_budget(3), 3, per_view, 10, 1, 5)[:2] == (None, False)  # None: all 5 kept
    assert _inference_ensemble(cpu_budget(3), 3, CPU_CASE_SECONDS / 8, 10, 1, 5)[:2] == (1, True)
    assert _inference_ensemble(cpu_budget(2), 2, CPU_CASE_SECONDS / 20, 1, 1, 5)[:2] == (None, True)
    assert _inference_ensemble(cpu_budget(3), 3, 2 * CPU_CASE_SECONDS, 10, 1, 5)[:2] == (1, False)
