"""Cross-validation splits: five folds of 60% train, 20% validation, 20% test.

Every case lies in exactly one fold's test set. Cases are stratified by the sorted tuple of classes they
contain (cases without objects form their own stratum), so rare classes spread over all folds. A
``splits.json`` the user wrote is used as it is, after checking that it names known cases only and that
train, val and test of a fold do not overlap.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from retinaunet.io import read_json, write_json
from retinaunet.layout import TaskPaths

SPLIT_KEYS = ("train", "val", "test")


class SplitsError(ValueError):
    """A splits.json that cannot be used; the message names the file and the fix."""


def make_splits(case_classes: Mapping[str, Iterable[int]], n_folds: int = 5,
                seed: int = 0) -> list[dict[str, list[str]]]:
    """Stratified folds: fold k tests on chunk k, validates on chunk k+1 and trains on the rest.

    case_classes: {case: classes present (from 0)}. Returns ``n_folds`` dicts {"train", "val", "test"} of
    sorted case names (60/20/20 for five folds). Deterministic for a seed.
    """
    if n_folds < 3:
        raise ValueError(f"n_folds must be at least 3 (train, val and test chunks), got {n_folds}")
    cases = sorted(case_classes)
    if len(cases) < 3:
        raise ValueError(f"cross-validation needs at least 3 cases, got {len(cases)}")
    if len(cases) < n_folds:
        logger.warning(f"only {len(cases)} cases for {n_folds} folds: some folds have empty val/test sets")
    strata: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for case in cases:
        strata[tuple(sorted({int(c) for c in case_classes[case]}))].append(case)
    rng = np.random.default_rng(seed)
    chunks: list[list[str]] = [[] for _ in range(n_folds)]
    offset = 0
    # larger strata first, so the running offset evens out chunk sizes across strata
    for key in sorted(strata, key=lambda k: (-len(strata[k]), k)):
        members = list(strata[key])
        rng.shuffle(members)
        for i, case in enumerate(members):
            chunks[(offset + i) % n_folds].append(case)
        offset += len(members)
    folds = []
    for k in range(n_folds):
        test, val = chunks[k], chunks[(k + 1) % n_folds]
        train = [c for j, chunk in enumerate(chunks) if j not in (k, (k + 1) % n_folds) for c in chunk]
        folds.append({"train": sorted(train), "val": sorted(val), "test": sorted(test)})
    return folds


def validate_splits(splits: Any, known_cases: Iterable[str], source: str | os.PathLike = "splits") -> None:
    """Raise :class:`SplitsError` (one line naming ``source``) unless ``splits`` is a usable list of folds.

    Each fold needs "train" and "val" lists ("test" is optional), names known cases only, and its three sets
    must not overlap.
    """
    known = set(known_cases)
    fix = "fix it or delete it to have the splits recreated"
    if not isinstance(splits, list) or not splits:
        raise SplitsError(f"{source}: expected a non-empty list of folds like "
                          f'[{{"train": [...], "val": [...], "test": [...]}}]; {fix}')
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict) or "train" not in fold or "val" not in fold:
            raise SplitsError(f"{source}: fold {k} must be a dict with 'train' and 'val' lists; {fix}")
        extra = set(fold) - set(SPLIT_KEYS)
        if extra:
            raise SplitsError(f"{source}: fold {k} has unknown keys {sorted(extra)} (allowed: train, val, test); {fix}")
        sets = {}
        for key in SPLIT_KEYS:
            names = fold.get(key, [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise SplitsError(f"{source}: fold {k} '{key}' must be a list of case names; {fix}")
            unknown = sorted(set(names) - known)
            if unknown:
                raise SplitsError(f"{source}: fold {k} '{key}' names unknown cases {unknown[:5]} "
                                  f"(not among the {len(known)} preprocessed cases); {fix}")
            if len(set(names)) != len(names):
                raise SplitsError(f"{source}: fold {k} '{key}' lists a case twice; {fix}")
            sets[key] = set(names)
        if not sets["train"]:
            raise SplitsError(f"{source}: fold {k} has no training cases; {fix}")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(sets[a] & sets[b])
            if both:
                raise SplitsError(f"{source}: fold {k} has cases in both '{a}' and '{b}' ({both[:5]}); {fix}")


def splits_file(task: TaskPaths | str | os.PathLike) -> Path:
    """The splits.json of a task (TaskPaths, task folder, or the file itself)."""
    if isinstance(task, TaskPaths):
        return task.splits
    path = Path(task)
    return path if path.suffix == ".json" else TaskPaths(path).splits


def load_or_create_splits(task_paths: TaskPaths | str | os.PathLike, case_classes: Mapping[str, Iterable[int]],
                          seed: int = 0, n_folds: int = 5) -> list[dict[str, list[str]]]:
    """The task's folds: splits.json as it is when present (validated), else new stratified folds written
    atomically to it. ``case_classes`` as in :func:`make_splits`; its keys are the known cases.
    """
    path = splits_file(task_paths)
    if path.exists():
        try:
            splits = read_json(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line message
            raise SplitsError(f"{path}: cannot read ({err}); fix it or delete it to have the splits recreated") \
                from None
        validate_splits(splits, case_classes, path)
        covered = {c for fold in splits for key in SPLIT_KEYS for c in fold.get(key, [])}
        missing = sorted(set(case_classes) - covered)
        if missing:
            logger.warning(f"{path}: {len(missing)} cases are in no fold (e.g. {missing[:3]}); they are not used")
        logger.info(f"using the splits in {path} ({len(splits)} folds)")
        return [{key: list(fold.get(key, [])) for key in SPLIT_KEYS} for fold in splits]
    splits = make_splits(case_classes, n_folds=n_folds, seed=seed)
    write_json(splits, path)
    logger.info(f"wrote {n_folds} stratified folds of {len(case_classes)} cases to {path}")
    return splits


def case_classes_from_dir(preprocessed_dir: str | os.PathLike) -> dict[str, set[int]]:
    """{case: classes present} from the ``<case>.json`` files of a preprocessed folder (those with a
    ``<case>.npy`` beside them)."""
    folder = Path(preprocessed_dir)
    result: dict[str, set[int]] = {}
    for meta in sorted(folder.glob("*.json")):
        if meta.name.startswith(".") or not (folder / f"{meta.stem}.npy").exists():
            continue
        instances = read_json(meta).get("instances", {})
        result[meta.stem] = {int(c) for c in instances.values()}
    return result
