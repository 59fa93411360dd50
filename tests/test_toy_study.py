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


def test_paired_differences_by_seed(tmp_path):
    ts = _module()
    prof = ts.PROFILES["settle"]
    assert len(prof.seeds) >= 8 and set(prof.models) == set(ts.PAIR)
    cells = []
    # shapes n=8: Retina U-Net ahead by 0.10 on every seed; scales n=8: +0.2, -0.2 alternating (no lead);
    # seed 7 of patterns has Retina Net only (not paired)
    for seed in range(8):
        swing = 0.2 if seed % 2 else -0.2
        cells += [{"kind": "shapes", "n": 8, "model": "retina_unet", "seed": seed, "ap": 0.6 + 0.01 * seed},
                  {"kind": "shapes", "n": 8, "model": "retina_net", "seed": seed, "ap": 0.5 + 0.01 * seed},
                  {"kind": "scales", "n": 8, "model": "retina_unet", "seed": seed, "ap": 0.7 + swing},
                  {"kind": "scales", "n": 8, "model": "retina_net", "seed": seed, "ap": 0.7}]
    cells += [{"kind": "patterns", "n": 8, "model": "retina_unet", "seed": 0, "ap": 0.9},
              {"kind": "patterns", "n": 8, "model": "retina_net", "seed": 0, "ap": 0.9},
              {"kind": "patterns", "n": 8, "model": "retina_net", "seed": 7, "ap": 0.1}]
    rows = {(r["kind"], r["n"]): r for r in ts.paired_differences(cells, prof, samples=2000)}
    assert set(rows) == {("shapes", 8), ("scales", 8), ("patterns", 8)}
    shapes, scales, patterns = rows[("shapes", 8)], rows[("scales", 8)], rows[("patterns", 8)]
    assert abs(shapes["mean_difference"] - 0.1) < 1e-9 and shapes["wins"] == 8 and shapes["losses"] == 0
    assert shapes["interval"][0] > 0.09 and ts.paired_verdict(shapes) == "Retina U-Net ahead"
    assert abs(scales["mean_difference"]) < 1e-9 and (scales["wins"], scales["losses"]) == (4, 4)
    lo, hi = scales["interval"]
    assert lo < 0 < hi and ts.paired_verdict(scales).startswith("not settled")
    assert patterns["seeds"] == [0] and patterns["interval"] is None and patterns["ties"] == 1
    assert ts.paired_verdict(patterns).startswith("1 seed(s) so far: too few")
    two = ts.paired_differences([c for c in cells if c["seed"] < 2], prof)[0]  # shapes, 2 seeds, both won
    assert two["wins"] == 2 and two["interval"][0] > 0 and "too few" in ts.paired_verdict(two)
    table = ts.paired_table(cells, prof)
    assert "| shapes | 8 | 8 | +10.0 |" in table and "8 / 0 / 0 | Retina U-Net ahead" in table


def test_a_variant_is_reported_beside_its_base_and_paired_with_it(tmp_path):
    ts = _module()
    prof = ts.PROFILES["settle"]
    cells = tmp_path / "cells"
    cells.mkdir()
    # scales n=8: the variant beats its base by 0.05 on every seed; its base is also paired with Retina Net
    for seed in range(8):
        for model, ap in (("retina_unet", 0.70), ("retina_net", 0.72), ("retina_unet+lrdrop", 0.75)):
            record = {"kind": "scales", "n": 8, "model": model, "seed": seed, "ap": ap + 0.01 * seed,
                      "ap_per_class": {"small": ap, "large": ap}, "best_val_ap": ap, "train_s": 1.0,
                      "predict_s": 1.0, "device": "cpu", "finished": "now"}
            (cells / f"{ts.cell_key('scales', 8, model, seed)}.json").write_text(json.dumps(record))
    assert ts.base_model("retina_unet+lrdrop") == "retina_unet" and ts.base_model("retina_net") == "retina_net"
    assert ts.model_label("retina_unet+lrdrop") == "Retina U-Net, lrdrop"
    ts.write_report(cells, tmp_path / "out", prof, "settle")
    table = (tmp_path / "out" / "toy_study.md").read_text()
    assert "16 of 96 cells, and 8 of variants" in table
    assert "| task | n | Retina U-Net | Retina Net | Retina U-Net, lrdrop |" in table
    assert "| scales | 8 | 73.5 (70-77) | 75.5 (72-79) | 78.5 (75-82) |" in table
    assert "Paired by seed: Retina U-Net, lrdrop against Retina U-Net" in table
    assert "| scales | 8 | 8 | +5.0 |" in table and "8 / 0 / 0 | Retina U-Net, lrdrop ahead" in table
    assert "| scales | 8 | 8 | -2.0 |" in table and "0 / 0 / 8 | Retina Net ahead" in table
    assert len((tmp_path / "out" / "toy_study.csv").read_text().splitlines()) == 25


def test_variant_arguments_are_checked(tmp_path, capsys):
    ts = _module()
    for bad in (["--variant", "lrdrop", "retina_unet"], ["--variant", "lrdrop", "no_such_model", "a.b=1"],
                ["--variant", "lrdrop", "retina_unet", "nokeyvalue"], ["--models", "retina_unet+other"]):
        try:
            ts.main(["--profile", "tiny", "--data-root", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                     "--report-only", *bad])
        except SystemExit as stop:
            assert stop.code == 2
        else:
            raise AssertionError(f"{bad} was accepted")
    assert "--variant" in capsys.readouterr().err


def test_a_variant_name_keeps_its_changes(tmp_path):
    ts = _module()
    out = tmp_path / "out"
    (out / "cells").mkdir(parents=True)
    record = {"kind": "shapes", "n": 4, "model": "retina_unet+drop", "seed": 0, "ap": 0.5,
              "overrides": ["training.lr_drop_at=0.5"]}
    (out / "cells" / "shapes_n0004_retina_unet+drop_s0.json").write_text(json.dumps(record))
    try:  # the same name with other changes would mix two variants in one row: refused before any training
        ts.main(["--profile", "tiny", "--data-root", str(tmp_path / "d"), "--out", str(out),
                 "--models", "retina_unet+drop", "--variant", "drop", "retina_unet", "training.lr_drop_at=0.8"])
    except SystemExit as stop:
        assert "another variant name" in str(stop.code)
    else:
        raise AssertionError("a variant name was reused for other changes")
