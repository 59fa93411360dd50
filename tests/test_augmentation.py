"""Augmentation: region sizes, in-plane rotation for anisotropic plans, and boxes that match the image."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from batchgenerators.transforms.abstract_transforms import Compose

from retinaunet.boxes import boxes_from_instance_map
from retinaunet.plans import make_test_plans
from retinaunet.training.augmentation import build_transforms, default_augmentation, sample_size
from retinaunet.training.batch import TargetsTransform, instance_targets
from retinaunet.training.loader import PatchLoader, PatchSampler, make_train_loader, read_case_info


def write_case(folder, name, shape, objects, image=None):
    """Disks/spheres of value 1 on 0 (noise free); objects: [(centre, radius, class)]."""
    grid = np.indices(shape)
    data = np.zeros((1, *shape), np.float32) if image is None else image[None].astype(np.float32)
    seg = np.zeros(shape, np.int32)
    for i, (centre, radius, _) in enumerate(objects, 1):
        mask = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2
        seg[mask] = i
        if image is None:
            data[0, mask] = 1.0
    np.save(folder / f"{name}.npy", data)
    np.save(folder / f"{name}_seg.npy", seg)
    meta = {"instances": {str(i): int(o[2]) for i, o in enumerate(objects, 1)},
            "boxes": {str(k): v.tolist() for k, v in boxes_from_instance_map(seg).items()}}
    (folder / f"{name}.json").write_text(json.dumps(meta))
    return name


@pytest.fixture
def seeded():
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


def _forced(params):
    """Every spatial augmentation on every patch, no intensity changes."""
    return replace(params.without_intensity(), p_rotation=1.0, p_scale=1.0,
                   p_elastic=1.0 if params.dim == 2 else 0.0)


def test_default_augmentation_per_plan():
    p2 = default_augmentation(make_test_plans(dim=2))
    assert p2.p_elastic > 0 and p2.mirror_axes == (0, 1) and len(p2.rotation) == 1
    aniso = make_test_plans(dim=3)
    aniso.target_spacing = [3.0, 0.7, 0.7]
    p3 = default_augmentation(aniso)
    assert p3.p_elastic == 0 and p3.mirror_axes == (0, 1, 2)
    assert p3.rotation[0] == (-math.pi, math.pi) and p3.rotation[1:] == ((0.0, 0.0), (0.0, 0.0))
    iso = default_augmentation(make_test_plans(dim=3))
    assert all(lo < 0 < hi for lo, hi in iso.rotation)


def test_sample_size():
    params = default_augmentation(make_test_plans(dim=2))
    assert sample_size([64, 64], None) == [64, 64]
    assert sample_size([64, 64], params.without_spatial()) == [64, 64]
    no_elastic = replace(params, p_elastic=0.0)
    assert sample_size([64, 64], no_elastic) == [math.ceil(64 * math.sqrt(2) * 1.25)] * 2
    assert sample_size([64, 32], no_elastic) == [math.ceil(96 / math.sqrt(2) * 1.25)] * 2
    assert sample_size([64, 64], params)[0] > 114  # elastic margin on top
    aniso = make_test_plans(dim=3)
    aniso.target_spacing = [3.0, 0.7, 0.7]
    region = sample_size([16, 64, 64], default_augmentation(aniso))
    assert region == [20, 114, 114]  # in-plane rotation does not grow z; scaling does


@pytest.mark.parametrize("dim, angle", [(2, math.pi / 4), (3, math.pi / 6)])
def test_region_fills_the_augmented_patch(dim, angle, seeded):
    """A patch rotated and zoomed out to the limits lies inside the region read, and only just."""
    plans = make_test_plans(dim=dim)
    params = replace(_forced(default_augmentation(plans)), p_elastic=0.0, mirror_axes=(),
                     rotation=((angle, angle),) * (1 if dim == 2 else 3), scale=(1.25, 1.25))
    patch = plans.patch_size
    region = sample_size(patch, params)
    for size, fills in ((region, True), ([int(r * 0.92) for r in region], False)):
        data = np.ones((2, 1, *size), np.float32)
        out = Compose(build_transforms(patch, params))(data=data, seg=np.ones_like(data))
        assert out["data"].shape == (2, 1, *patch)
        assert (out["seg"].min() == 1) == fills  # 0 marks a voxel from outside the region
        if fills:
            assert out["data"].min() > 0.99


def test_elastic_margin_keeps_the_patch_filled(seeded):
    plans = make_test_plans(dim=2)
    params = replace(_forced(default_augmentation(plans)), mirror_axes=())
    region = sample_size(plans.patch_size, params)
    data = np.ones((16, 1, *region), np.float32)
    out = Compose(build_transforms(plans.patch_size, params))(data=data, seg=np.ones_like(data))
    assert out["seg"].min() == 1


def test_anisotropic_3d_rotates_in_plane_only(seeded):
    plans = make_test_plans(dim=3, patch_size=[8, 32, 32])
    plans.target_spacing = [3.0, 0.7, 0.7]
    params = replace(default_augmentation(plans).without_intensity(), p_rotation=1.0, p_scale=0.0,
                     mirror_axes=())
    region = sample_size(plans.patch_size, params)
    assert region[0] == 8
    z = np.arange(region[0], dtype=np.float32)[:, None, None]
    data = np.broadcast_to(z, region)[None, None].repeat(3, axis=0).copy()
    half = np.zeros_like(data)
    half[..., region[1] // 2:, :] = 1  # an in-plane pattern that rotation must turn
    out = Compose(build_transforms(plans.patch_size, params))(data=data, seg=half)
    np.testing.assert_allclose(out["data"], np.broadcast_to(z, (3, 1, 8, 32, 32)), atol=1e-3)  # slices stay
    lo = (region[1] - 32) // 2
    assert all(not np.array_equal(out["seg"][b], half[b, :, :, lo:lo + 32, lo:lo + 32]) for b in range(3))


def _check_targets(raw_batch, transforms):
    """Augment a raw batch, derive targets, and check them against the augmented instance map and image."""
    aug = Compose(transforms)(**raw_batch)
    inst = np.rint(aug["seg"][:, 0]).astype(np.int32)
    assert np.array_equal(inst, aug["seg"][:, 0])  # nearest neighbour: ids stay whole numbers
    image = aug["data"][:, 0]
    dim = inst.ndim - 1
    out = TargetsTransform()(**aug)
    n_boxes = 0
    for b in range(inst.shape[0]):
        classes = out["classes"][b]
        expected = boxes_from_instance_map(inst[b])
        ids = sorted(expected)
        assert set(ids) <= set(classes)
        assert out["boxes"][b].shape == (len(ids), 2 * dim)
        for i, box in zip(ids, out["boxes"][b]):
            np.testing.assert_array_equal(box, expected[i])
        np.testing.assert_array_equal(out["labels"][b], [classes[i] for i in ids])
        lut = np.zeros(max(classes) + 1, np.int64)
        for i, c in classes.items():
            lut[i] = c + 1
        np.testing.assert_array_equal(out["target_seg"][b], lut[inst[b]])
        # a noise-free object of value 1 on 0: the image agrees with the map inside each box
        for i in ids:
            box = tuple(slice(lo, hi) for lo, hi in zip(expected[i][:dim], expected[i][dim:]))
            mask = inst[b][box] == i
            assert (image[b][box][mask] > 0.5).mean() > 0.9
        assert (image[b][inst[b] == 0] > 0.5).mean() < 0.03
        n_boxes += len(ids)
    return n_boxes


def test_boxes_follow_augmented_instances_2d(tmp_path, seeded):
    objects = [((30, 30), 6, 0), ((60, 62), 9, 1), ((70, 25), 4, 1), ((20, 75), 5, 0)]
    names = [write_case(tmp_path, f"c{i}", (96, 96), objects) for i in range(2)]
    plans = make_test_plans(dim=2, patch_size=[48, 48])
    params = _forced(default_augmentation(plans))
    sampler = PatchSampler([read_case_info(tmp_path, n) for n in names], plans.patch_size,
                           sample_size(plans.patch_size, params))
    loader = PatchLoader(sampler, batch_size=4, foreground_fraction=0.5, seed=0)
    n_boxes = sum(_check_targets(loader.generate_train_batch(), build_transforms(plans.patch_size, params))
                  for _ in range(8))
    assert n_boxes >= 16


def test_boxes_follow_augmented_instances_3d(tmp_path, seeded):
    objects = [((10, 20, 24), 5, 0), ((12, 34, 30), 6, 1)]
    names = [write_case(tmp_path, "v0", (20, 48, 48), objects)]
    plans = make_test_plans(dim=3, patch_size=[16, 32, 32])
    params = _forced(default_augmentation(plans))
    sampler = PatchSampler([read_case_info(tmp_path, n) for n in names], plans.patch_size,
                           sample_size(plans.patch_size, params))
    loader = PatchLoader(sampler, batch_size=2, foreground_fraction=1.0, seed=0)
    n_boxes = sum(_check_targets(loader.generate_train_batch(), build_transforms(plans.patch_size, params))
                  for _ in range(3))
    assert n_boxes >= 3


@pytest.mark.parametrize("mode, patch, channels", [("2d", [32, 32], 1), ("2dc", [32, 32], 7), ("3d", [16, 32, 32], 1)])
def test_augmented_train_batches(tmp_path, mode, patch, channels):
    """One object per case: the semantic map alone gives back every box and label."""
    names = [write_case(tmp_path, f"v{i}", (20, 48, 48), [((10, 24, 24), 6, i % 2)]) for i in range(2)]
    plans = make_test_plans(dim=len(patch), mode=mode, in_channels=channels, patch_size=patch)
    loader = make_train_loader(tmp_path, names, plans, num_workers=0, seed=3, batch_size=4)
    for _ in range(3):
        batch = next(loader)
        assert batch.images.shape == (4, channels, *patch) and batch.images.dtype == torch.float32
        assert batch.seg.shape == (4, *patch) and batch.seg.dtype == torch.int64
        for b in range(4):
            from_seg = boxes_from_instance_map(batch.seg[b].numpy())
            assert sorted(from_seg) == [int(c) + 1 for c in batch.labels[b]]
            for c, box in zip(batch.labels[b].tolist(), batch.boxes[b].numpy()):
                np.testing.assert_array_equal(box, from_seg[c + 1])


def test_instance_targets_drop_vanished_instances():
    inst = np.zeros((10, 10), np.int32)
    inst[1:3, 2:5] = 1
    inst[6:9, 7:8] = 3
    seg, boxes, labels = instance_targets(inst, {1: 0, 2: 1, 3: 1})
    np.testing.assert_array_equal(boxes, [[1, 2, 3, 5], [6, 7, 9, 8]])
    np.testing.assert_array_equal(labels, [0, 1])
    assert seg[1, 2] == 1 and seg[6, 7] == 2 and seg.sum() == 6 * 1 + 3 * 2
    empty = instance_targets(np.zeros((4, 4, 4), np.float32), {})
    assert empty[1].shape == (0, 6) and empty[2].shape == (0,) and not empty[0].any()
    with pytest.raises(ValueError, match="case x: instance ids \\[3\\]"):
        instance_targets(inst, {1: 0}, case="x")
