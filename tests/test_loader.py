"""Patch sampler and training loader: foreground share, class balance, slices, memory mapping, workers."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

import retinaunet.training.batch as batch_module
from retinaunet.boxes import boxes_from_instance_map
from retinaunet.plans import make_test_plans
from retinaunet.store import read_region
from retinaunet.training.batch import TrainBatch
from retinaunet.training.loader import PatchLoader, PatchSampler, make_train_loader, read_case_info


def write_case(folder, name, shape, objects, channels=1, image=None):
    """Disks/spheres of value 1 (or a given image); objects: [(centre, radius, class)]."""
    grid = np.indices(shape)
    data = np.zeros((channels, *shape), np.float32) if image is None else image.astype(np.float32)
    seg = np.zeros(shape, np.int32)
    for i, (centre, radius, _) in enumerate(objects, 1):
        mask = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2
        seg[mask] = i
        if image is None:
            data[:, mask] = 1.0
    np.save(folder / f"{name}.npy", data)
    np.save(folder / f"{name}_seg.npy", seg)
    boxes = {str(k): v.tolist() for k, v in boxes_from_instance_map(seg).items()}
    meta = {"case": name, "shape": list(shape), "instances": {str(i): int(o[2]) for i, o in enumerate(objects, 1)},
            "boxes": boxes}
    (folder / f"{name}.json").write_text(json.dumps(meta))
    return name


@pytest.fixture
def guard():
    """Fail instead of hanging: SIGALRM after 60 s."""
    def on_alarm(signum, frame):
        raise TimeoutError("test hung")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def cases2d(tmp_path):
    names = [write_case(tmp_path, f"case{i}", (96, 96), [((30, 30), 6, 0), ((65, 60), 8, 1)]) for i in range(3)]
    return tmp_path, names


@pytest.fixture
def cases3d(tmp_path):
    z = np.arange(20, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(z + 1, (20, 48, 48))[None]
    names = [write_case(tmp_path, f"vol{i}", (20, 48, 48), [((8, 20, 24), 5, 0), ((14, 30, 30), 4, 1)],
                        image=image) for i in range(2)]
    return tmp_path, names


def test_read_region_pads_with_zeros():
    array = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12) + 1
    padded = np.pad(array, ((0, 0), (5, 5), (5, 5)))
    out = read_region(array, [-3, 8], [6, 7])
    np.testing.assert_array_equal(out, padded[:, 2:8, 13:20])
    assert not read_region(array, [20, 0], [3, 3]).any()


def test_foreground_share_and_class_balance(tmp_path):
    # five cases with two common objects, one case with a single rare object: a random 32x32 patch of these
    # 256x256 images rarely holds an object's centre
    names = [write_case(tmp_path, f"c{i}", (256, 256), [((60, 60), 5, 0), ((190, 180), 6, 0)]) for i in range(5)]
    names.append(write_case(tmp_path, "rare", (256, 256), [((128, 100), 5, 1)]))
    cases = [read_case_info(tmp_path, n) for n in names]
    sampler = PatchSampler(cases, [32, 32], [32, 32])
    loader = PatchLoader(sampler, batch_size=8, foreground_fraction=0.5, seed=0)
    contains, fg_flags, rare_in_fg, offsets = [], [], [], []
    for _ in range(100):
        batch = loader.generate_train_batch()
        for b in range(8):
            case = cases[names.index(batch["cases"][b])]
            lo = np.asarray(batch["origins"][b])
            centres = {i: (box[:2] + box[2:]) / 2 for i, box in case.boxes.items()}
            inside = {i for i, c in centres.items() if np.all((c >= lo) & (c < lo + 32))}
            contains.append(bool(inside))
            fg_flags.append(batch["foreground"][b])
            if batch["foreground"][b]:
                assert inside, "a foreground patch must hold its object's centre"
                rare_in_fg.append(case.name == "rare")
                offsets.append(min(np.abs(centres[i] - (lo + 16)).max() for i in inside))
    assert sum(fg_flags) == 400  # 0.5 * 8 is whole: exactly half of every batch
    assert 0.47 <= np.mean(contains) <= 0.6
    assert 0.4 <= np.mean(rare_in_fg) <= 0.6  # the rare class is drawn as often as the common one
    assert np.mean(offsets) > 2  # centres are jittered, objects not always in the middle
    assert max(offsets) <= 0.25 * 32 + 1


def test_small_object_bias_favours_small_objects(tmp_path):
    # one class, a small disk (radius 2: box 5 x 5) and a large one (radius 16: box 33 x 33)
    name = write_case(tmp_path, "two", (128, 128), [((30, 30), 2, 0), ((90, 90), 16, 0)])
    case = read_case_info(tmp_path, name)
    small = min(case.boxes, key=lambda i: float(np.prod(case.boxes[i][2:] - case.boxes[i][:2])))

    def small_share(bias):
        sampler = PatchSampler([case], [32, 32], [32, 32], small_object_bias=bias)
        rng = np.random.default_rng(0)
        picks = [sampler.choose(rng, True).centre for _ in range(2000)]
        centre = (case.boxes[small][:2] + case.boxes[small][2:]) / 2
        return np.mean([np.abs(c - centre).max() <= 0.25 * 32 + 1 for c in picks])

    assert 0.45 <= small_share(0.0) <= 0.55  # uniform over the class's objects, as before
    expected = 33 / (33 + 5)  # weights 5 ** -1 and 33 ** -1, normalised
    assert abs(small_share(1.0) - expected) < 0.03


def test_train_batch_2d(cases2d):
    folder, names = cases2d
    plans = make_test_plans(dim=2, patch_size=[32, 32])
    loader = make_train_loader(folder, names, plans, num_workers=0, seed=0, augment=False, batch_size=4)
    batch = next(loader)
    assert isinstance(batch, TrainBatch) and len(batch) == 4
    assert batch.images.shape == (4, 1, 32, 32) and batch.images.dtype == torch.float32
    assert batch.seg.shape == (4, 32, 32) and batch.seg.dtype == torch.int64
    for b in range(4):
        assert batch.boxes[b].shape[1] == 4 and batch.labels[b].dtype == torch.int64
        # without augmentation the image is 1 exactly on the objects
        np.testing.assert_array_equal(batch.images[b, 0].numpy() > 0.5, batch.seg[b].numpy() > 0)


def test_2dc_slices_with_context(cases3d):
    folder, names = cases3d
    plans = make_test_plans(dim=2, mode="2dc", in_channels=7, patch_size=[32, 32])
    loader = make_train_loader(folder, names, plans, num_workers=0, seed=1, augment=False, batch_size=8)
    hit_border = False
    for _ in range(10):
        batch = next(loader)
        assert batch.images.shape == (8, 7, 32, 32) and batch.seg.shape == (8, 32, 32)
        for b in range(8):
            values = batch.images[b, :, 16, 16].numpy()
            z = int(values[3]) - 1  # the image holds slice index + 1
            expected = [z + dz + 1 if 0 <= z + dz < 20 else 0 for dz in range(-3, 4)]
            np.testing.assert_array_equal(values, expected)
            hit_border |= 0 in expected
            if batch.boxes[b].numel():
                assert batch.boxes[b].shape[1] == 4
    assert hit_border


def test_2d_plan_on_3d_data(cases3d):
    folder, names = cases3d
    plans = make_test_plans(dim=2, patch_size=[32, 32])
    batch = next(make_train_loader(folder, names, plans, num_workers=0, seed=0, batch_size=3))
    assert batch.images.shape == (3, 1, 32, 32) and batch.seg.shape == (3, 32, 32)


def test_3d_batch(cases3d):
    folder, names = cases3d
    plans = make_test_plans(dim=3, patch_size=[16, 32, 32])
    batch = next(make_train_loader(folder, names, plans, num_workers=0, seed=0))
    assert batch.images.shape == (2, 1, 16, 32, 32) and batch.images.dtype == torch.float32
    assert batch.seg.shape == (2, 16, 32, 32) and batch.seg.dtype == torch.int64
    assert all(b.shape[1] == 6 for b in batch.boxes)


def test_wrong_channel_count_is_reported(cases3d):
    folder, names = cases3d
    plans = make_test_plans(dim=2, mode="2dc", in_channels=1, patch_size=[32, 32])
    with pytest.raises(ValueError, match="7 input channels but the plans expect 1"):
        make_train_loader(folder, names, plans, num_workers=0)


def test_patches_read_through_memory_map(cases3d, monkeypatch):
    folder, names = cases3d
    plans = make_test_plans(dim=3, patch_size=[16, 32, 32])
    original = np.load
    calls = []

    def checked_load(*args, **kwargs):
        assert kwargs.get("mmap_mode") == "r", "cases must be memory-mapped, not read whole"
        array = original(*args, **kwargs)
        assert isinstance(array, np.memmap)
        calls.append(args[0])
        return array

    monkeypatch.setattr(np, "load", checked_load)
    loader = make_train_loader(folder, names, plans, num_workers=0, seed=0)
    before = len(calls)
    next(loader)
    assert len(calls) - before == 4  # image and instance map of each of the 2 patches


def test_deterministic_for_a_seed_without_workers(cases2d):
    folder, names = cases2d
    plans = make_test_plans(dim=2, patch_size=[32, 32])
    np.random.seed(123)
    random.seed(123)
    global_state = np.random.get_state()[1].copy()
    py_state = random.getstate()
    runs = []
    for seed in (5, 5, 6):
        loader = make_train_loader(folder, names, plans, num_workers=0, seed=seed)
        runs.append([next(loader) for _ in range(3)])
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a.images, b.images) and torch.equal(a.seg, b.seg)
        assert all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert any(not torch.equal(a.images, c.images) for a, c in zip(runs[0], runs[2]))
    # numpy's and Python's global RNGs are left alone
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)
    assert random.getstate() == py_state


def test_workers_produce_batches(cases2d, guard):
    folder, names = cases2d
    plans = make_test_plans(dim=2, patch_size=[32, 32])
    with make_train_loader(folder, names, plans, num_workers=2, seed=0) as loader:
        batches = [next(loader) for _ in range(4)]
        processes = list(loader._augmenter._processes)
    assert all(b.images.shape == (2, 1, 32, 32) for b in batches)
    assert not any(p.is_alive() for p in processes)


def _in_workers(action):
    parent = os.getpid()
    original = batch_module.instance_targets

    def patched(*args, **kwargs):
        if os.getpid() != parent:
            action()
        return original(*args, **kwargs)
    return patched


def _die():
    os._exit(3)


def _fail():
    raise ValueError("broken transform")


def _hang():
    time.sleep(600)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("action, message", [(_die, "worker died"), (_fail, "worker died"),
                                             (_hang, "no batch in 3 s")])
def test_broken_worker_stops_with_clear_error(cases2d, guard, monkeypatch, action, message):
    folder, names = cases2d
    plans = make_test_plans(dim=2, patch_size=[32, 32])
    monkeypatch.setattr(batch_module, "instance_targets", _in_workers(action))
    loader = make_train_loader(folder, names, plans, num_workers=1, seed=0, timeout=3)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=message):
        for _ in range(5):
            next(loader)
    assert time.monotonic() - start < 20
    loader.close()
