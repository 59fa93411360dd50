"""Anchor coverage on the real grid, the planned matcher, size buckets in evaluation, the nodule task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from retinaunet.planning.anchors_plan import optimise_anchors
from retinaunet.planning.coverage import bucket_names, choose_matching, coverage_table, grid_best_iou, matcher_positives
from retinaunet.planning.topology import choose_head_levels, level_strides, plan_strides

from retinaunet.anchors import AdaptiveMatcher, AnchorGenerator, Matcher
from retinaunet.boxes import box_iou
from retinaunet.evaluation.io import CaseBoxes
from retinaunet.evaluation.sizes import box_size_mm, evaluate_by_size
from retinaunet.toy_nodules import NoduleConfig, make_nodule_case


@pytest.mark.parametrize("dim", [2, 3])
def test_grid_best_iou_equals_brute_force_over_all_anchors(dim):
    rng = np.random.default_rng(dim)
    strides = [[2, 4, 4], [4, 8, 8], [8, 16, 16]] if dim == 3 else [[4, 4], [8, 8], [16, 16]]
    gen = AnchorGenerator([4.0, 9.0, 20.0], [2.0, 4.0, 9.0] if dim == 3 else None, dim=dim)
    shape = [64, 128, 128][-dim:]
    feats = [[s // t for s, t in zip(shape, st)] for st in strides]
    anchors = gen(shape, feats, dtype=torch.float64)
    sizes = rng.uniform(1.5, 30.0, size=(60, dim))
    centres = rng.uniform(0.35, 0.65, size=(60, dim)) * np.asarray(shape)[None]  # away from the border
    boxes = torch.tensor(np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1))
    brute = box_iou(boxes, anchors).max(dim=1).values.numpy()
    ours = grid_best_iou(sizes, gen, strides, centres)
    assert np.allclose(ours, brute, atol=1e-9)


def _planned(patch, spacing, sizes):
    """Strides, head levels, anchors and matching as the planner chooses them."""
    strides = plan_strides(patch, spacing)
    levels, _ = choose_head_levels(strides, sizes)
    per_level = [level_strides(strides, k) for k in levels]
    dim = len(patch)
    plan = optimise_anchors(sizes, dim, patch_size=patch, level_strides=per_level)
    gen = AnchorGenerator(plan.base_sizes, plan.z_base_sizes, dim=dim)
    matching, table, _ = choose_matching(sizes, spacing, gen, per_level, 0.4, 0.5)
    return gen, per_level, matching, table


@pytest.mark.parametrize("patch,spacing", [([128, 128], (1.0, 1.0)), ([32, 64, 64], (1.0, 1.0, 1.0)),
                                           ([24, 64, 64], (1.25, 0.7, 0.7)), ([16, 64, 64], (2.5, 0.7, 0.7))])
def test_every_object_from_two_voxels_to_half_the_patch_gets_a_positive(patch, spacing):
    sp = np.asarray(spacing)
    diam = np.geomspace(2 * sp.min(), 0.5 * min(p * s for p, s in zip(patch, spacing)), 40)
    sizes = np.maximum(2.0, np.round(diam[:, None] / sp[None]))
    gen, per_level, matching, table = _planned(patch, spacing, sizes)
    assert len({tuple(s) for s in per_level}) == len(per_level)  # no duplicate head levels
    offsets = np.random.default_rng(0).uniform(0, 64, size=sizes.shape)
    counts, quality = matcher_positives(sizes, gen, per_level, offsets, matching)
    assert counts.min() >= 1 and quality.min() > 0
    assert all(row["matched"] == 1.0 for row in table.values() if row["objects"])


def test_matching_is_fixed_when_the_grid_covers_every_size_and_adaptive_otherwise():
    gen = AnchorGenerator([16.0], None, dim=2)
    big = np.full((20, 2), 20.0)
    assert _matching(big, gen, [[4, 4]]) == "iou"  # fine grid, objects near the anchor size
    assert _matching(big, gen, [[32, 32]]) == "adaptive"  # the same anchor on a grid coarser than the object


def _matching(sizes, gen, strides):
    return choose_matching(sizes, (1.0, 1.0), gen, strides, 0.4, 0.5)[0]["method"]


def test_adaptive_matcher_positives_near_hits_ignored_rest_negative():
    gen = AnchorGenerator([4.0, 8.0], None, scales=[1.0], ratios=[1.0], dim=2)
    feats = [[16, 16], [8, 8]]
    anchors = gen([64, 64], feats)
    gt = torch.tensor([[21.0, 21.0, 27.0, 27.0]])
    m = AdaptiveMatcher(candidates=4).match(gt, anchors, [256, 64])
    iou = box_iou(gt, anchors)[0]
    assert (m == 0).sum() >= 1 and iou[m == 0].min() > 0
    assert iou[m == 0].max() == iou.max()  # the best anchor is positive
    assert (iou[m == Matcher.BELOW_LOW] < 0.4 + 1e-6).all()
    far = torch.tensor([[50.0, 50.0, 52.0, 52.0]])
    both = AdaptiveMatcher().match(torch.cat([gt, far]), anchors, [256, 64])
    assert (both == 1).any() and (both == 0).any()  # each object gets its own positives
    assert (AdaptiveMatcher().match(gt[:0], anchors, [256, 64]) == Matcher.BELOW_LOW).all()


def test_coverage_table_reports_buckets_in_mm():
    gen = AnchorGenerator([4.0, 8.0, 16.0], [2.0, 4.0, 8.0], dim=3)
    sizes = np.array([[3, 6, 6], [6, 12, 12], [10, 20, 20], [20, 40, 40]], dtype=float)  # 4.2 .. 28 mm
    table = coverage_table(sizes, (1.25, 0.7, 0.7), gen, [[1, 2, 2], [2, 4, 4], [4, 8, 8]],
                           {"method": "adaptive"}, 0.5)
    assert list(table) == bucket_names() == ["<6", "6-10", "10-20", ">20"]
    assert [row["objects"] for row in table.values()] == [1, 1, 1, 1]
    assert all(row["matched"] == 1.0 for row in table.values())


def test_evaluate_by_size_separates_buckets():
    spacing = (1.25, 0.7, 0.7)
    # objects of 4.2, 8.4, 14 and 28 mm in-plane; the detector finds all but the 8.4 mm one
    gt_boxes = np.array([[10, 10, 10, 12, 16, 16], [20, 20, 20, 26, 32, 32], [5, 40, 40, 15, 60, 60],
                         [30, 60, 60, 50, 100, 100]], dtype=float)
    gt = {"a": CaseBoxes(gt_boxes, np.array([0, 1, 0, 2]))}
    found = gt_boxes[[0, 2, 3]]
    pred = {"a": CaseBoxes(np.concatenate([found, [[0, 0, 0, 4, 40, 40]]]), np.array([0, 0, 2, 0]),
                           np.array([0.9, 0.8, 0.7, 0.95]))}
    assert np.allclose(box_size_mm(gt_boxes, spacing), [4.2, 8.4, 14.0, 28.0])
    result = evaluate_by_size(pred, gt, {"a": spacing}, 3, 0.1)["buckets"]
    assert [r["objects"] for r in result.values()] == [1, 1, 1, 1]
    assert result["<6"]["AP_any"] == 1.0 and result["10-20"]["AP_any"] == 1.0
    assert result["6-10"]["AP_any"] == 0.0
    # the unmatched 28 mm false positive counts only in the > 20 mm bucket, below the true one
    assert result[">20"]["AP_any"] == pytest.approx(0.5, abs=0.02)


def test_nodule_case_is_ct_scale_with_three_classes():
    cfg = NoduleConfig(extent_mm=(30.0, 50.0, 50.0), nodules_per_case=(2, 3), num_train=1, num_test=0)
    image, inst, classes, geom = make_nodule_case(cfg, "train", 0)
    assert image.shape == inst.shape == (24, 71, 71) and geom.spacing == (1.25, 0.7, 0.7)
    assert image.min() < -700 and image.max() > 0  # lung parenchyma and soft tissue / vessels
    assert set(classes.values()) <= {0, 1, 2} and len(classes) >= 1
    assert set(np.unique(inst)) - {0} == set(classes)
    for i in classes:
        idx = np.nonzero(inst == i)
        extent = max((idx[a].max() - idx[a].min() + 1) * 0.7 for a in (1, 2))
        assert 2.0 <= extent <= 32.0
    thick, _, _, g2 = make_nodule_case(NoduleConfig(extent_mm=(30.0, 50.0, 50.0), spacing=(2.5, 0.7, 0.7)),
                                       "train", 0)
    assert thick.shape[0] == 12 and math.isclose(g2.spacing[0], 2.5)
