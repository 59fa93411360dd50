"""Reading a task's ``splits.json``: the cross-validation folds every stage and the evaluation share.

The file is a list of folds ``[{"train": [...], "val": [...], "test": [...]}, ...]`` (a converter may
write ten; five stratified folds are made by the trainer when there is none, see
``retinaunet.training.splits``). This module only reads and checks it, so the evaluation can count and
pool the folds without importing the training stage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from retinaunet.io import read_json
from retinaunet.layout import TaskPaths

__all__ = ["SPLIT_KEYS", "SplitsError", "num_folds", "read_splits", "splits_file", "pooled_test_cases",
           "validate_splits"]

SPLIT_KEYS = ("train", "val", "test")
FIX = "fix it or delete it to have the splits recreated"


class SplitsError(ValueError):
    """A splits.json that cannot be used; the message names the file and the fix."""


def splits_file(task: TaskPaths | str | os.PathLike) -> Path:
    """The splits.json of a task (TaskPaths, task folder, or the file itself)."""
    if isinstance(task, TaskPaths):
        return task.splits
    path = Path(task)
    return path if path.suffix == ".json" else TaskPaths(path).splits


def read_splits(path: str | os.PathLike) -> Any:
    """The parsed content of ``path``; an unreadable file is a :class:`SplitsError` naming it."""
    try:
        return read_json(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise SplitsError(f"{path}: cannot read ({err}); {FIX}") from None


def validate_splits(splits: Any, known_cases: Iterable[str], source: str | os.PathLike = "splits") -> None:
    """Raise :class:`SplitsError` (one line naming ``source``) unless ``splits`` is a usable list of folds.

    Each fold needs "train" and "val" lists ("test" is optional), names known cases only, and its three sets
    must not overlap.
    """
    known = set(known_cases)
    if not isinstance(splits, list) or not splits:
        raise SplitsError(f"{source}: expected a non-empty list of folds like "
                          f'[{{"train": [...], "val": [...], "test": [...]}}]; {FIX}')
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict) or "train" not in fold or "val" not in fold:
            raise SplitsError(f"{source}: fold {k} must be a dict with 'train' and 'val' lists; {FIX}")
        extra = set(fold) - set(SPLIT_KEYS)
        if extra:
            raise SplitsError(f"{source}: fold {k} has unknown keys {sorted(extra)} (allowed: train, val, test); {FIX}")
        sets = {}
        for key in SPLIT_KEYS:
            names = fold.get(key, [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise SplitsError(f"{source}: fold {k} '{key}' must be a list of case names; {FIX}")
            unknown = sorted(set(names) - known)
            if unknown:
                raise SplitsError(f"{source}: fold {k} '{key}' names unknown cases {unknown[:5]} "
                                  f"(not among the {len(known)} preprocessed cases); {FIX}")
            if len(set(names)) != len(names):
                raise SplitsError(f"{source}: fold {k} '{key}' lists a case twice; {FIX}")
            sets[key] = set(names)
        if not sets["train"]:
            raise SplitsError(f"{source}: fold {k} has no training cases; {FIX}")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(sets[a] & sets[b])
            if both:
                raise SplitsError(f"{source}: fold {k} has cases in both '{a}' and '{b}' ({both[:5]}); {FIX}")


def num_folds(task_paths: TaskPaths | str | os.PathLike, default: int = 5) -> int:
    """Folds of a task: as many as its splits.json lists (a converter may write ten), else ``default``."""
    path = splits_file(task_paths)
    if not path.is_file():
        return default
    splits = read_splits(path)
    if not isinstance(splits, list) or not splits:
        raise SplitsError(f"{path}: expected a non-empty list of folds; fix it or delete it")
    return len(splits)


def pooled_test_cases(path: str | os.PathLike) -> list[str] | None:
    """Union of the folds' test cases if the file lists them ([{"test": [...]}, ...]), else None.

    Lenient on purpose: the pooled evaluation falls back to the cases the folds predicted when the file
    is missing or holds no test lists (``{"folds": [...]}`` or ``{"splits": [...]}`` are read too).
    """
    path = Path(path)
    if not path.is_file():
        return None
    splits = read_json(path)
    if isinstance(splits, dict):
        splits = splits.get("folds", splits.get("splits"))
    if not isinstance(splits, list) or not all(isinstance(s, dict) and "test" in s for s in splits):
        return None
    return sorted({str(c) for s in splits for c in s["test"]})
