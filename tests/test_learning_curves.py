"""scripts/learning_curves.py: a tiny run of two budgets (the second extends the first run), resumable, its
report; the epochs of a later budget from the measured seconds per epoch."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "scripts" / "learning_curves.py"
spec = importlib.util.spec_from_file_location("learning_curves", SCRIPT)
curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curves)


def test_a_later_budget_gets_epochs_from_the_measured_seconds():
    history = [{"epoch": 1, "seconds": 30.0}, {"epoch": 2, "seconds": 30.0}]  # 1 minute in 2 epochs
    assert curves.trained_seconds(history) == 60.0
    assert curves.epochs_for(5.0, history) == 10
    assert curves.epochs_for(0.1, history) == 2  # never fewer than the run has trained
    order = curves.cell_order(["retina_unet", "monai"], [0, 1], [20.0, 5.0])
    assert order[:4] == [(0, "retina_unet", 5.0), (0, "monai", 5.0), (1, "retina_unet", 5.0), (1, "monai", 5.0)]
    assert [b for _, _, b in order] == [5.0] * 4 + [20.0] * 4  # every seed and model at a budget before the next


def _cell(model: str, seed: int, minutes: float, value: float) -> dict:
    return {"model": model, "seed": seed, "minutes": minutes, "minutes_spent": minutes * 0.98, "fold": 0,
            "map": value, "cpm": value, "by_size": {"<6": value / 2, "6-10": value}, "objects_by_size": {"<6": 3,
            "6-10": 2}, "epochs": 2, "batches_per_epoch": 5, "wall_seconds": 1.0, "finished": "-"}


def test_known_batches_come_from_the_first_cell_of_the_model_or_of_a_variants_base(tmp_path):
    for model, seed, minutes, batches in (("retina_unet", 0, 20.0, 71), ("retina_unet", 0, 5.0, 64),
                                          ("retina_unet", 1, 5.0, 101), ("monai_plan", 2, 5.0, None)):
        cell = {**_cell(model, seed, minutes, 0.5), "batches_per_epoch": batches}
        (tmp_path / f"{curves.cell_key(model, seed, minutes)}.json").write_text(json.dumps(cell))
    assert curves.known_batches(tmp_path, "retina_unet", 0) == 64  # its first budget's
    assert curves.known_batches(tmp_path, "retina_unet+lrdrop", 1) == 101  # a variant: its base's, same seed
    assert curves.known_batches(tmp_path, "retina_unet+lrdrop", 2) is None  # nothing to follow: measured
    assert curves.known_batches(tmp_path, "retina_net", 0) is None


def test_two_tasks_run_budget_by_budget_and_report_together(tmp_path, monkeypatch):
    order = curves.cell_order(["retina_unet"], [0, 1], [20.0, 5.0], tasks=2)
    assert [(t, b) for t, _, _, b in order] == [(0, 5.0), (0, 5.0), (1, 5.0), (1, 5.0),
                                                (0, 20.0), (0, 20.0), (1, 20.0), (1, 20.0)]
    from retinaunet.plans import make_test_plans, save_plans

    data = tmp_path / "data"
    for name in ("Task901_Nodes", "Task902_Balls"):
        (data / name).mkdir(parents=True)
        save_plans(make_test_plans(dim=3, patch_size=[16, 32, 32]), data / name / "plans.json")
        (data / name / "splits.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}]))
    monkeypatch.setenv("RUD_DATA", str(data))
    work, out = tmp_path / "work", tmp_path / "out"
    for name, values in (("Task901_Nodes", (0.2, 0.4)), ("Task902_Balls", (0.9,))):
        cells = out / name / "cells"  # the cells live beside the report (the work folder holds the runs)
        cells.mkdir(parents=True)
        for seed, v in enumerate(values):
            for model in ("retina_unet", "monai_plan"):
                (cells / f"{curves.cell_key(model, seed, 5.0)}.json").write_text(json.dumps(_cell(model, seed, 5.0, v)))
    assert curves.main(["-t", "901", "902", "--work", str(work), "-o", str(out), "--report-only"]) == 0
    for name in ("Task901_Nodes", "Task902_Balls"):
        assert (out / name / "learning_curves.png").stat().st_size > 0
        assert f"### Learning curves: {name}" in (out / name / "learning_curves.md").read_text()
    combined = (out / "learning_curves.md").read_text()
    assert combined.index("Task901_Nodes") < combined.index("Task902_Balls")
    assert "| Retina U-Net | 5 | 2 | 4.9 | - | 30.0 (20-40) |" in combined  # two seeds: mean (min-max)
    assert "| Retina U-Net | 5 | 1 | 4.9 | - | 90.0 (1 seed) |" in combined
    assert (out / "learning_curves.png").stat().st_size > 0
    assert curves.main(["-t", "901", "902", "-i", str(tmp_path), "-o", str(out)]) == 1  # -i names one task's images


def test_a_variant_gets_its_own_changed_plans_and_its_own_rows(tmp_path):
    from retinaunet.plans import load_plans, make_test_plans

    model, overrides = curves.parse_variant(["round", "retina_unet", "anchors.ratios=[1.0]", "anchors.scales=[1.0]"])
    assert model == "retina_unet+round" and curves.base_model(model) == "retina_unet"
    for bad in (["round", "retina_unet"], ["round", "monai", "anchors.ratios=[1.0]"], ["a b", "retina_net", "x=1"],
                ["round", "retina_net", "anchors.ratios"]):
        try:
            curves.parse_variant(bad)
        except curves.CurveError as err:
            assert "--variant" in str(err) and "e.g." in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")
    task = tmp_path / "Task901_Nodes"
    (task / "preprocessed").mkdir(parents=True)
    plans = make_test_plans(dim=3, patch_size=[16, 32, 32])
    doc = {"default": plans.plan_name, "configurations": {plans.plan_name: plans.to_dict(), "2d": {"keep": 1}}}
    (task / "plans.json").write_text(json.dumps(doc))
    work = tmp_path / "work"
    root = curves.variant_root(task, work, 1, model, overrides)
    assert root == work / "seed1" / "variants" / "round" / "Task901_Nodes"
    changed = load_plans(root / "plans.json")
    assert changed.anchors.ratios == [1.0] and changed.anchors.scales == [1.0]
    assert changed.network == plans.network and json.loads((root / "plans.json").read_text())["configurations"]["2d"]
    assert (root / "preprocessed").is_symlink() and not (root / "plans.json").is_symlink()
    assert load_plans(task / "plans.json").anchors.ratios == plans.anchors.ratios  # the task's own plan untouched
    assert curves.variant_root(task, work, 1, model, overrides) == root  # the same changes: the same root
    doc["configurations"]["2dc"] = {"added": "later"}  # rud_plan --mode 2dc on the task: still the same variant
    (task / "plans.json").write_text(json.dumps(doc))
    assert curves.variant_root(task, work, 1, model, overrides) == root
    try:  # other changes under the same name would mix two runs: refused, nothing overwritten
        curves.variant_root(task, work, 1, model, ["anchors.ratios=[0.5,1.0]"])
    except curves.CurveError as err:
        assert "another variant name" in str(err)
    else:
        raise AssertionError("a variant's plans were overwritten")
    cells = [_cell("retina_unet", 0, 5.0, 0.4), {**_cell(model, 0, 5.0, 0.6), "overrides": overrides}]
    table = curves.markdown_table(cells, "Task901_Nodes")
    row = "| Retina U-Net, round | 5 | 1 | 4.9 | - | 60.0 (1 seed) |"  # no steps recorded: -
    assert table.index("| Retina U-Net | 5 |") < table.index(row)
    assert "Retina U-Net, round: anchors.ratios=[1.0] anchors.scales=[1.0]" in table
    cells.append({**_cell(model, 1, 5.0, 0.3), "overrides": overrides})  # seed 1 has no base cell: not paired
    cells.append(_cell("retina_unet", 2, 5.0, 0.5))
    cells.append({**_cell(model, 2, 5.0, 0.46), "overrides": overrides})
    table = curves.markdown_table(cells, "Task901_Nodes")  # seeds 0 and 2: +20 and -4 points, one win
    assert "| Retina U-Net, round | 5 | 2 | - | +8.0 (1/2) | +8.0 (1/2) | +4.0 (1/2) | +8.0 (1/2) |" in table
    for c in cells:  # steps recorded: their mean per row, and the variant's over its base's in the paired row
        c["steps"] = 300 if "+" in c["model"] else 150
    table = curves.markdown_table(cells, "Task901_Nodes")
    assert "| Retina U-Net, round | 5 | 3 | 4.9 | 300 |" in table and "| Retina U-Net | 5 | 2 | 4.9 | 150 |" in table
    assert "| Retina U-Net, round | 5 | 2 | 2.00 | +8.0 (1/2) |" in table
    # a rerun of the base detector under a variant's name (the same machine as the variants): pairs with them
    rerun = "retina_unet+same"
    cells += [{**_cell(rerun, 0, 5.0, 0.5), "overrides": ["network.norm=instance"], "steps": 300},
              {**_cell(rerun, 2, 5.0, 0.36), "overrides": ["network.norm=instance"], "steps": 300}]
    table = curves.markdown_table(cells, "Task901_Nodes", against="same")  # seeds 0, 2: +10 and +10 points
    assert "| Retina U-Net, round - Retina U-Net, same | 5 | 2 | 1.00 | +10.0 (2/2) |" in table
    assert "| Retina U-Net, same | 5 | 2 | 2.00 | -2.0 (1/2) |" in table  # the rerun itself against the base
    assert "| Retina U-Net, round | 5 | 2 | 2.00 | +8.0 (1/2) |" in curves.markdown_table(cells, "Task901_Nodes")
    curves.plot([("Task901_Nodes", cells)], tmp_path / "curves.png", "t")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_a_variant_can_train_another_configuration_of_the_plans(tmp_path):
    from retinaunet.plans import load_plans, make_test_plans

    task = tmp_path / "Task901_Nodes"
    (task / "preprocessed").mkdir(parents=True)
    three = make_test_plans(dim=3, patch_size=[16, 32, 32])
    two = make_test_plans(dim=2, patch_size=[32, 32], mode="2dc", in_channels=7)
    doc = {"default": three.plan_name, "configurations": {three.plan_name: three.to_dict(), "2dc": two.to_dict()}}
    (task / "plans.json").write_text(json.dumps(doc))
    model, overrides = curves.parse_variant(["twod", "retina_unet", "plan=2dc", "anchors.ratios=[1.0]"])
    assert curves.variant_plan(overrides) == ("2dc", ["anchors.ratios=[1.0]"])
    assert curves.variant_plan(["anchors.ratios=[1.0]"]) == (None, ["anchors.ratios=[1.0]"])
    root = curves.variant_root(task, tmp_path / "work", 0, model, overrides)
    chosen = load_plans(root / "plans.json")  # the variant's default: the named configuration, changed
    assert chosen.plan_name == "2dc" and chosen.dim == 2 and chosen.anchors.ratios == [1.0]
    kept = json.loads((root / "plans.json").read_text())["configurations"][three.plan_name]
    assert load_plans(task / "plans.json").plan_name == three.plan_name and kept == three.to_dict()
    for bad, says in ((["plan=2d"], "rud_plan --mode 2d"), (["plan=2dc"], "rud_plan --mode 2dc")):
        if bad == ["plan=2dc"]:  # a single-plan file has no configurations to choose from
            (task / "plans.json").write_text(json.dumps(three.to_dict()))
        try:
            curves.variant_root(task, tmp_path / "other", 0, model, bad)
        except Exception as err:
            assert says in str(err), err
        else:
            raise AssertionError(f"{bad} was accepted")
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "a.json").write_text(json.dumps({**_cell("retina_unet", 0, 5.0, 0.4), "batches_per_epoch": 71}))
    assert curves.known_batches(cells, model, 0) == 71  # another plan's variant would take its base's epochs
    assert curves.known_batches(cells, model, 0, own_only=True) is None  # ...but measures its own


def test_a_run_whose_rate_drops_gets_a_root_per_budget(tmp_path):
    task = tmp_path / "Task901_Nodes"
    (task / "preprocessed").mkdir(parents=True)
    (task / "plans.json").write_text("{}")
    root = tmp_path / "work" / "seed0" / "variants" / "lrdrop" / task.name
    root.mkdir(parents=True)
    (root / "plans.json").write_text('{"changed": 1}')
    (root / "preprocessed").symlink_to(task / "preprocessed")
    five, twenty = curves.budget_root(root, 5.0), curves.budget_root(root, 20.0)
    assert five == root.parent / "m5" / task.name and twenty == root.parent / "m20" / task.name
    assert json.loads((five / "plans.json").read_text()) == {"changed": 1}  # the variant's plans, not the task's
    assert (five / "preprocessed").resolve() == (task / "preprocessed").resolve()
    assert curves.budget_root(root, 5.0) == five  # made once, the same folder again


def test_a_run_trained_past_the_budget_is_not_scored_as_it(tmp_path):
    import torch

    from retinaunet.plans import make_test_plans

    plans = make_test_plans(dim=3, patch_size=[16, 32, 32])
    root = tmp_path / "work" / "seed0" / "Task901_Nodes"
    fold = root / "models" / f"retina_unet_{plans.plan_name}" / "fold0"
    fold.mkdir(parents=True)
    (root / "plans.json").write_text(json.dumps(plans.to_dict()))
    torch.save({"epoch": 2, "history": [{"seconds": 600.0}, {"seconds": 600.0}]}, fold / "checkpoint_last.pt")
    try:  # 20 minutes trained, a 5-minute cell asked for: refused before any training
        curves.train_project(tmp_path / "Task901_Nodes", root, "retina_unet", 0, 0, 5.0, tmp_path / "s.json", None, 10)
    except curves.CurveError as err:
        assert "20.00 min, past this cell's 5" in str(err) and "--work" in str(err)
    else:
        raise AssertionError("a 20-minute run was taken for a 5-minute cell")


def test_tiny_learning_curve_extends_the_run_and_reports(tmp_path):
    env = {"RUD_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1", "PATH": f"{BIN}:/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*args], cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=900)

    (tmp_path / "data").mkdir()
    proc = run(sys.executable, str(SCRIPT), "-t", "101", "-o", "out")
    assert proc.returncode == 1 and "101" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1  # no task
    for cmd in (["rud_example", "shapes", "--num-train", "10", "--num-test", "2", "--size", "64", "--radius", "8",
                 "--hole-radius", "2", "--quiet"], ["rud_plan", "-t", "101"],
                ["rud_preprocess", "-t", "101", "--workers", "0"]):
        assert run(str(BIN / cmd[0]), *cmd[1:]).returncode == 0, cmd
    args = [sys.executable, str(SCRIPT), "-t", "101", "--minutes", "0.01", "0.3", "--seeds", "0",
            "--models", "retina_unet", "--threads", "1", "-o", "out", "--variant", "round", "retina_unet",
            "anchors.ratios=[1.0]"]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    work = tmp_path / "data" / "Task101_ToyShapes" / "learning_curves"
    cells = tmp_path / "out" / "cells"
    short, longer = (json.loads((cells / f"retina_unet_s0_m{m}.json").read_text()) for m in ("0.01", "0.3"))
    assert longer["epochs"] > short["epochs"] and longer["batches_per_epoch"] == short["batches_per_epoch"]
    assert longer["steps"] > short["steps"] >= 1 and longer["steps"] <= longer["epochs"] * longer["batches_per_epoch"]
    assert longer["minutes_spent"] > short["minutes_spent"] > 0
    # the clock stops the extension: the budget spent, overshot by at most the step that spent it
    assert longer["stop"] == "clock" and 18.0 <= 60 * longer["minutes_spent"] < 18.0 + 10.0
    for cell in (short, longer):
        assert 0 <= cell["map"] <= 1 and 0 <= cell["cpm"] <= 1 and cell["by_size"]
        assert cell["inference"]["settings"] in ("planned", "swept") and cell["inference"]["mirror"] in (True, False)
    # what the longer run predicted with, as its (last) sweep chose
    sweep = json.loads((work / "seed0" / "Task101_ToyShapes" / "models" / "retina_unet_2d" / "fold0"
                        / "sweep.json").read_text())
    assert longer["inference"] == {"checkpoints": sweep["chosen"]["checkpoints"], "mirror": sweep["chosen"]["mirror"],
                                   "settings": sweep["decision"]["chosen"]}
    seed_models = work / "seed0" / "Task101_ToyShapes" / "models"
    assert (seed_models / "retina_unet_2d" / "fold0" / "checkpoint_last.pt").is_file()
    assert not (tmp_path / "data" / "Task101_ToyShapes" / "models").exists()  # the task's own models untouched
    variant_models = work / "seed0" / "variants" / "round" / "Task101_ToyShapes" / "models" / "retina_unet_2d"
    assert json.loads((variant_models / "plans.json").read_text())["anchors"]["ratios"] == [1.0]  # trained on it
    assert (variant_models / "fold0" / "checkpoint_last.pt").is_file()
    variant = json.loads((cells / "retina_unet+round_s0_m0.3.json").read_text())
    assert variant["overrides"] == ["anchors.ratios=[1.0]"] and 0 <= variant["map"] <= 1
    assert variant["batches_per_epoch"] == short["batches_per_epoch"]  # the epochs of the cells it pairs with
    table = (tmp_path / "out" / "learning_curves.md").read_text()
    assert "| Retina U-Net | 0.01 | 1 |" in table and "| Retina U-Net | 0.3 | 1 |" in table
    assert "| Retina U-Net, round | 0.3 | 1 |" in table
    # the work folder lost (a new machine): the cells kept with the report are done, nothing trains again
    shutil.rmtree(work)
    proc = run(*args)
    assert proc.returncode == 0 and "4 cells, 4 already done" in proc.stdout, proc.stderr[-2000:]
    assert not work.exists() and (tmp_path / "out" / "learning_curves.md").read_text() == table
    assert len((tmp_path / "out" / "learning_curves.csv").read_text().splitlines()) == 5
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 0
    proc = run(*args)  # finished cells are skipped
    assert proc.returncode == 0 and "4 already done" in proc.stdout


def test_each_variant_has_its_own_marker_and_line_in_every_panel():
    models = ["retina_unet", "retina_net", "retina_unet+b", "retina_unet+a", "retina_net+c"]
    styles = {m: curves.model_style(m, models) for m in models}
    assert styles["retina_unet"] == (curves.COLORS["retina_unet"], "o", "-", True)
    variants = [styles[m][1:3] for m in ("retina_unet+a", "retina_unet+b", "retina_net+c")]
    assert len(set(variants)) == 3 and all(not styles[m][3] for m in ("retina_unet+a", "retina_unet+b"))
    assert styles["retina_unet+a"][0] == styles["retina_unet"][0]  # a variant keeps its base's colour
    assert curves.model_style("retina_unet+b", list(reversed(models))) == styles["retina_unet+b"]  # order-free
