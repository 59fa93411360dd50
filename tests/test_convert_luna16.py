"""rud_convert luna16 on a LUNA16-like download: rotated .mhd scans, annotations.csv, ten-fold splits."""

from __future__ import annotations

import json

import numpy as np

from retinaunet.convert.cli import main as rud_convert
from retinaunet.convert.luna16 import convert_luna16, luna_splits
from retinaunet.dataset import validate_dataset
from retinaunet.io import Geometry, read_image, read_json
from retinaunet.layout import TaskPaths
from retinaunet.splits import num_folds
from tests.convert_fixtures import make_luna


def test_luna16_spheres_lie_at_the_world_centres(tmp_path):
    nodules = make_luna(tmp_path / "luna")
    task = tmp_path / "Task016_LUNA16"
    summary = convert_luna16(tmp_path / "luna", task, progress=False)
    paths = TaskPaths(task)
    assert validate_dataset(task, progress=False) == []
    names = read_json(task / "case_names.json")
    assert sorted(names.values()) == sorted(nodules) and all("." not in c for c in names)
    assert len(summary.written) == 6 and summary.objects[0] == 9
    assert [reason for _, reason in summary.dropped] == ["annotation of a scan not in the subsets"]
    for cid, uid in names.items():
        labels, geom = read_image(paths.labels_tr / f"{cid}.nii.gz")
        image, _ = read_image(paths.images_tr / f"{cid}_0000.nii.gz")
        classes = read_json(paths.labels_tr / f"{cid}.json")["instances"]
        assert len(classes) == len(nodules[uid]) and set(classes.values()) == {0}
        assert np.allclose(geom.direction, (0, -1, 0, 1, 0, 0, 0, 0, 1))
        for k, (centre, diameter) in enumerate(nodules[uid], start=1):
            voxels = np.argwhere(labels == k)
            world = Geometry.index_to_world(geom, voxels.astype(float))
            assert np.allclose(world.mean(0), centre, atol=0.5)
            assert np.linalg.norm(world - np.asarray(centre), axis=1).max() <= diameter / 2 + 1e-6
            # the bright sphere of the scan is where the label is
            assert image[labels == k].mean() > 0
    splits = read_json(paths.splits)
    assert len(splits) == 3 and num_folds(task) == 3 and num_folds(tmp_path) == 5
    assert all(len(f["test"]) == 2 and len(f["val"]) == 2 and len(f["train"]) == 2 for f in splits)
    assert sorted(c for f in splits for c in f["test"]) == sorted(names)


def test_luna16_resumes_shards_and_leaves_the_source(tmp_path, data_root, capsys):
    make_luna(tmp_path / "luna")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "luna").rglob("*"))
    assert rud_convert(["luna16", str(tmp_path / "luna"), "-t", "16", "--shard", "0/2", "--quiet"]) == 0
    task = data_root / "Task016_LUNA16"
    first = sorted(p.name for p in (task / "raw_splitted" / "labelsTr").glob("*.json"))
    assert len(first) == 3
    assert rud_convert(["luna16", str(tmp_path / "luna"), "-t", "16", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 written, 3 already there" in out and "nodule 9" in out and "not in the subsets" in out
    assert len(list((task / "raw_splitted" / "labelsTr").glob("*.json"))) == 6
    assert before == sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "luna").rglob("*"))
    # an interrupted case (image written, label json not yet) is redone
    victim = task / "raw_splitted" / "labelsTr" / f"{first[0]}"
    victim.unlink()
    assert rud_convert(["luna16", str(tmp_path / "luna"), "-t", "16", "--quiet"]) == 0
    assert "1 written, 5 already there" in capsys.readouterr().out
    assert rud_convert(["luna16", str(tmp_path / "missing"), "-t", "16"]) == 1


def test_luna_splits_make_one_fold_per_subset():
    cases = {f"c{s}{k}": s for s in range(10) for k in range(3)}
    folds = luna_splits(cases)
    assert len(folds) == 10
    for s, fold in enumerate(folds):
        assert fold["test"] == sorted(c for c, t in cases.items() if t == s)
        assert fold["val"] == sorted(c for c, t in cases.items() if t == (s + 1) % 10)
        assert len(fold["train"]) == 24
    json.dumps(folds)
