"""Cross-validation splits: coverage, sizes, stratification, determinism and user-written files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retinaunet import store
from retinaunet.layout import TaskPaths
from retinaunet.training.splits import (
    SplitsError,
    load_or_create_splits,
    make_splits,
    validate_splits,
)


def _cases(n_common: int = 30, n_rare: int = 10, n_empty: int = 10) -> dict[str, set[int]]:
    cases: dict[str, set[int]] = {}
    for i in range(n_common):
        cases[f"common_{i:03d}"] = {0}
    for i in range(n_rare):
        cases[f"rare_{i:03d}"] = {0, 1}
    for i in range(n_empty):
        cases[f"empty_{i:03d}"] = set()
    return cases


def test_folds_cover_every_case_once_with_60_20_20():
    cases = _cases()
    folds = make_splits(cases, n_folds=5, seed=0)
    assert len(folds) == 5
    tests = [c for fold in folds for c in fold["test"]]
    assert sorted(tests) == sorted(cases)  # every case in exactly one test set
    for fold in folds:
        train, val, test = set(fold["train"]), set(fold["val"]), set(fold["test"])
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(cases)
        assert (len(train), len(val), len(test)) == (30, 10, 10)
    vals = [c for fold in folds for c in fold["val"]]
    assert sorted(vals) == sorted(cases)


def test_uneven_sizes_stay_within_one_case():
    folds = make_splits({f"c{i}": {i % 3} for i in range(23)}, seed=1)
    sizes = [len(f["test"]) for f in folds]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 23


def test_stratified_by_classes_present():
    folds = make_splits(_cases(), seed=3)
    for fold in folds:
        assert sum(c.startswith("rare") for c in fold["test"]) == 2
        assert sum(c.startswith("empty") for c in fold["test"]) == 2
        assert sum(c.startswith("rare") for c in fold["train"]) == 6


def test_deterministic_for_a_seed():
    cases = _cases()
    assert make_splits(cases, seed=7) == make_splits(dict(reversed(list(cases.items()))), seed=7)
    assert make_splits(cases, seed=7) != make_splits(cases, seed=8)


def test_too_few_cases():
    with pytest.raises(ValueError, match="at least 3 cases"):
        make_splits({"a": {0}, "b": set()})


def test_created_once_then_read(tmp_path):
    paths = TaskPaths(tmp_path)
    cases = _cases()
    folds = load_or_create_splits(paths, cases, seed=0)
    assert paths.splits.exists()
    assert json.loads(paths.splits.read_text()) == folds
    # a later call reads the file, even with another seed
    assert load_or_create_splits(paths, cases, seed=5) == folds


def test_user_file_used_as_it_is(tmp_path):
    paths = TaskPaths(tmp_path)
    cases = _cases(6, 0, 0)
    names = sorted(cases)
    user = [{"train": names[:4], "val": names[4:5], "test": names[5:]}, {"train": names[1:], "val": names[:1]}]
    paths.splits.write_text(json.dumps(user))
    folds = load_or_create_splits(paths, cases)
    assert len(folds) == 2
    assert folds[0] == user[0]
    assert folds[1] == {"train": names[1:], "val": names[:1], "test": []}


@pytest.mark.parametrize("bad, match", [
    ([{"train": ["common_000", "ghost"], "val": ["common_001"]}], "unknown cases.*ghost"),
    ([{"train": ["common_000", "common_001"], "val": ["common_001"]}], "both 'train' and 'val'"),
    ([{"train": ["common_000"], "val": ["common_001"], "test": ["common_001"]}], "both 'val' and 'test'"),
    ([{"train": ["common_000"]}], "'train' and 'val'"),
    ({"train": []}, "list of folds"),
])
def test_user_file_validated(tmp_path, bad, match):
    paths = TaskPaths(tmp_path)
    paths.splits.write_text(json.dumps(bad))
    with pytest.raises(SplitsError, match=match) as info:
        load_or_create_splits(paths, _cases(5, 0, 0))
    message = str(info.value)
    assert str(paths.splits) in message and "\n" not in message


def test_unreadable_file_names_it(tmp_path):
    paths = TaskPaths(tmp_path)
    paths.splits.write_text("[{")
    with pytest.raises(SplitsError, match="splits.json"):
        load_or_create_splits(paths, _cases(5, 0, 0))


def test_validate_accepts_made_splits():
    cases = _cases()
    validate_splits(make_splits(cases), cases)


def test_case_classes_from_dir(tmp_path):
    for name, inst in (("a", {"1": 0, "2": 1}), ("b", {})):
        np.save(tmp_path / f"{name}.npy", np.zeros((1, 4, 4), np.float32))
        (tmp_path / f"{name}.json").write_text(json.dumps({"instances": inst}))
    (tmp_path / "other.json").write_text("{}")
    assert store.case_classes(tmp_path) == {"a": {0, 1}, "b": set()}
