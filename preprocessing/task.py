"""`rud_preprocess` as a function: every training case of a task, in parallel, resumable, atomic.

Cases are written through the preprocessed store (:mod:`retinaunet.store`); each case's json carries a
key of its inputs (raw files, preprocessing-relevant plans entries, code version), and a case is up to
date when it is complete with the current key. Before a case is redone its json is removed, so an
interrupted run leaves nothing that a rerun trusts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from retinaunet.preprocessing.preprocess import preprocess_case

from retinaunet import store
from retinaunet.dataset import Case, list_cases
from retinaunet.io import read_case, read_label
from retinaunet.layout import TaskPaths
from retinaunet.parallel import run_parallel
from retinaunet.plans import Plans, load_plans
from retinaunet.shard import in_shard

__all__ = ["preprocess_task", "preprocess_one", "case_key", "PreprocessReport", "PREPROCESS_VERSION"]

PREPROCESS_VERSION = 1


@dataclass
class PreprocessReport:
    """What a run did: cases written, skipped as up to date, and failures (case -> error)."""

    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def case_key(case: Case, plans: Plans) -> str:
    """Hash of what a preprocessed case depends on: raw files (name, size, mtime) and the plans' entries."""
    h = hashlib.sha1()
    for f in [*case.images, case.label, case.label_json]:
        if f is not None and Path(f).exists():
            st = os.stat(f)
            h.update(f"{Path(f).name}:{st.st_size}:{st.st_mtime_ns};".encode())
    relevant = {"v": PREPROCESS_VERSION, "target_spacing": plans.target_spacing,
                "normalization": plans.normalization}
    if plans.crop.method != "nonzero":  # (cases preprocessed before the crop entry existed stay current)
        relevant["crop"] = dataclasses.asdict(plans.crop)
    h.update(json.dumps(relevant, sort_keys=True).encode())
    return h.hexdigest()


def preprocess_one(item: tuple[Case, Plans, str, str]) -> dict[str, Any]:
    """Preprocess and store one case (worker function): item = (case, plans, out dir, key)."""
    case, plans, out_dir, key = item
    store.invalidate(out_dir, case.name)  # from here on, the case is not trusted until its json is back
    images, geom = read_case(case.images)
    inst, mapping = (read_label(case.label, case.label_json) if case.label is not None
                     else (np.zeros(images.shape[1:], np.int32), {}))
    data, seg, props = preprocess_case(images, geom, plans, inst, mapping, case=case.name)
    del images, inst
    props["key"] = key
    store.save_case(out_dir, case.name, data, seg, props)
    return {"case": case.name, "shape": props["shape"], "objects": len(props["boxes"])}


def preprocess_task(task: str | int | os.PathLike, workers: int = 2, force: bool = False,
                    plans: Plans | None = None, plan: str | None = None,
                    shard: tuple[int, int] = (0, 1)) -> PreprocessReport:
    """Preprocess every training case of a task with its ``plans.json`` configuration ``plan`` (default: the
    file's default), or with ``plans``; with ``shard`` (i, n) only every n-th case from the i-th.

    Up-to-date cases are skipped unless ``force``. A failing case is logged and recorded in the
    report; the others go on. ``shard=(i, n)`` does only every n-th case (sorted names) from i, so n
    machines sharing the task folder preprocess it together.
    """
    paths = TaskPaths(Path(task)) if Path(str(task)).is_dir() else TaskPaths.from_task(task)
    plans = plans if plans is not None else load_plans(paths.plans, plan)
    out_dir = paths.preprocessed(plans.plan_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PreprocessReport(out_dir)
    todo = []
    cases = list_cases(paths.root, "train")
    mine = in_shard([c.name for c in cases], shard)
    for case in (c for c in cases if c.name in mine):
        key = case_key(case, plans)
        if not force and store.is_current(out_dir, case.name, key):
            report.skipped.append(case.name)
        else:
            todo.append((case, plans, str(out_dir), key))
    if report.skipped:
        logger.info(f"{len(report.skipped)} case(s) up to date, skipped (--force redoes them)")
    for item, _, error in run_parallel(preprocess_one, todo, workers, "preprocess"):
        name = item[0].name
        if error is not None:
            report.failed[name] = error
            logger.error(f"{name}: {error}")
        else:
            report.done.append(name)
    logger.info(f"preprocessed {len(report.done)} case(s) into {out_dir}"
                + (f"; {len(report.failed)} failed" if report.failed else ""))
    return report
