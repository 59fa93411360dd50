"""Cross-validation splits: five folds of 60% train, 20% validation, 20% test by default.

Every case lies in exactly one fold's test set. Cases are stratified by the sorted tuple of classes they
contain (cases without objects form their own stratum), so rare classes spread over all folds. A
``splits.json`` the user wrote is used as it is, after checking that it names known cases only and that
train, val and test of a fold do not overlap. Reading and checking the file is the core's
(``retinaunet.splits``); making the folds is the trainer's.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
from loguru import logger

from retinaunet.io import write_json
from retinaunet.layout import TaskPaths
from retinaunet.splits import SPLIT_KEYS, SplitsError, read_splits, splits_file, validate_splits

__all__ = ["SPLIT_KEYS", "SplitsError", "load_or_create_splits", "make_splits", "validate_splits"]


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


def load_or_create_splits(task_paths: TaskPaths | str | os.PathLike, case_classes: Mapping[str, Iterable[int]],
                          seed: int = 0, n_folds: int = 5) -> list[dict[str, list[str]]]:
    """The task's folds: splits.json as it is when present (validated), else new stratified folds written
    atomically to it. ``case_classes`` as in :func:`make_splits`; its keys are the known cases. A
    splits.json may hold any number of folds (LUNA16's converter writes its ten subsets).
    """
    path = splits_file(task_paths)
    if path.exists():
        splits = read_splits(path)
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
