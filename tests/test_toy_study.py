"""scripts/toy_study.py without training: its splits, the order of its cells and its report."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "toy_study.py"


def _module():
    spec = importlib.util.spec_from_file_location("toy_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_study"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_splits_are_nested_per_seed_and_share_val():
    ts = _module()
    prof = ts.PROFILES["quick"]
    small, large = ts.study_split(prof, 8, 0), ts.study_split(prof, 128, 0)
    assert len(small["train"]) == 8 and set(small["train"]) <= set(large["train"])
    assert small["val"] == large["val"] == ts.study_split(prof, 8, 1)["val"]
    assert not set(small["val"]) & set(large["train"])
    assert ts.study_split(prof, 8, 1)["train"] != small["train"]


def test_cell_order_covers_every_cell_once_and_starts_with_the_central_pair():
    ts = _module()
    prof = ts.PROFILES["quick"]
    order = ts.cell_order(prof)
    assert len(order) == len(set(order)) == len(prof.sizes) * len(prof.seeds) * len(prof.models) * len(prof.kinds)
    first = order[: 2 * len(prof.kinds)]
    assert {m for *_, m in first} == {"retina_unet", "retina_net"} and {n for _, n, *_ in first} == {min(prof.sizes)}


def test_report_from_finished_cells(tmp_path):
    ts = _module()
    prof = ts.PROFILES["quick"]
    cells = tmp_path / "cells"
    cells.mkdir()
    for seed, n, kind, model in ts.cell_order(prof)[:8]:
        record = {"kind": kind, "n": n, "model": model, "seed": seed, "ap": 0.5, "ap_per_class": {"a": 0.4, "b": 0.6},
                  "best_val_ap": 0.5, "train_s": 1.0, "predict_s": 1.0, "device": "cpu", "finished": "now"}
        (cells / f"{ts.cell_key(kind, n, model, seed)}.json").write_text(json.dumps(record))
    ts.write_report(cells, tmp_path / "out", prof, "quick")
    table = (tmp_path / "out" / "toy_study.md").read_text()
    assert "8 of 48 cells" in table and "| shapes | 8 | 50.0 (1 seed) | 50.0 (1 seed) |" in table
    assert (tmp_path / "out" / "toy_study.png").stat().st_size > 0
    assert len((tmp_path / "out" / "toy_study.csv").read_text().splitlines()) == 9
