"""Fingerprint: per-case geometry, objects (class, size in voxels and mm), counts, empty cases,
object-voxel intensity statistics, reuse when the raw data is unchanged, and parallel == serial."""

from __future__ import annotations

import numpy as np
import pytest
from retinaunet.planning.fingerprint import compute_fingerprint, fingerprint_case, load_or_compute_fingerprint

from retinaunet.dataset import list_cases
from retinaunet.io import read_case, read_label
from retinaunet.toy import Toy3DConfig, write_toy_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    cfg = Toy3DConfig(num_train=6, num_test=1, empty_fraction=0.3)
    return write_toy_task("spheres", tmp_path_factory.mktemp("data"), config=cfg, progress=False)


def test_case_fingerprint_matches_the_arrays(task):
    case = list_cases(task)[1]
    fp = fingerprint_case(case, samples_per_case=50)
    images, geom = read_case(case.images)
    inst, mapping = read_label(case.label)
    assert fp["shape"] == list(geom.shape) and fp["spacing"] == list(geom.spacing)
    assert fp["origin"] == list(geom.origin) and fp["direction"] == list(geom.direction)
    assert fp["num_objects"] == len(mapping) == len(fp["objects"])
    for obj in fp["objects"]:
        where = np.argwhere(inst == obj["id"])
        size = where.max(0) - where.min(0) + 1
        assert obj["class"] == mapping[obj["id"]] and obj["size_voxels"] == size.tolist()
        assert np.allclose(obj["size_mm"], size * np.asarray(geom.spacing), atol=1e-3)
        assert obj["volume_voxels"] == len(where)
    samples = fp["_samples"]
    assert samples.shape == (1, min(50, int((inst > 0).sum())))
    assert set(np.round(samples[0], 3)) <= set(np.round(images[0][inst > 0], 3))


def test_task_fingerprint_counts_statistics_and_reuse(task):
    fp, written = load_or_compute_fingerprint(task, workers=0, force=True)
    assert written and fp["num_cases"] == 6 and fp["dim"] == 3
    counts = [c["num_objects"] for c in fp["cases"]]
    assert fp["objects_per_case"]["total"] == sum(counts) == sum(fp["objects_per_class"].values())
    assert fp["empty_cases"] == [c["case"] for c in fp["cases"] if c["num_objects"] == 0]
    stats = fp["intensity"][0]
    assert stats["name"] == "CT" and stats["p0.5"] <= stats["p50"] <= stats["p99.5"]
    assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] > 0
    # object voxels are brighter than the background the toy paints at -800
    assert stats["mean"] > np.mean([c["image_stats"][0]["mean"] for c in fp["cases"]])
    again, written = load_or_compute_fingerprint(task, workers=0)
    assert not written and again["signature"] == fp["signature"]


def test_parallel_equals_serial(task):
    serial = compute_fingerprint(task, workers=0)
    parallel = compute_fingerprint(task, workers=2)
    assert serial == parallel
