"""Learning curves: held-out AP@0.1 per object size and CPM against minutes of training, four detectors, seeds.

For one task and fold, Retina U-Net and Retina Net (this project's ``rud_train`` with the planner's defaults)
and MONAI's RetinaNet (``scripts/peer_monai.py``, its LUNA16 tutorial's recipe) are trained for each budget
of ``--minutes`` and each seed of ``--seeds``; after each budget the held-out images (the task's
``imagesTs``) are predicted as a user gets them and scored: mAP@0.1, CPM and the mAP@0.1 of each object-size
bucket (``rud_evaluate``'s buckets, by axial diameter in mm).

    python scripts/learning_curves.py -t 110 --minutes 5 20 60 --seeds 0 1 2 -o docs/learning_curves/nodules
    python scripts/learning_curves.py -t 110 ... --report-only          # table and figure from finished cells
    python scripts/learning_curves.py -t 110 104 --minutes 5 20 60 --seeds 0 1 2 -o docs/learning_curves
                                     # two tasks, each budget on both before the next; a figure of both

How the budgets are spent:

- Retina U-Net, Retina Net: one run per seed, extended budget by budget (``rud_train --resume --epochs K
  --max-minutes M``: Adam carries on at the plan's constant learning rate, so the 20-minute network is the
  5-minute one trained on). The first budget's schedule comes from one measured training step of the model
  (``planning/schedule.py``, as ``rud_plan --train-minutes``) and sets the batches per epoch; a new run then
  trains one epoch, and each budget trains until the run's training steps reach its minutes
  (``--max-minutes``: the clock stops it mid-epoch, as MONAI's loop stops; ``K`` is only a cap, twice the
  epochs the run's measured seconds per epoch would give). A run that starts when a cell of the same model
  and seed is already finished (its seed root was lost), and a variant's run, take the epoch length of that
  cell (a variant: of its base detector's cell of the seed) instead of a measured step, so the compared runs
  validate and keep checkpoints at the same steps. Cells run before this clock stop (they record no
  ``"stop"``) trained whole epochs sized from the seconds per epoch measured so far, and spent 4.3 to 5.4 of 5
  minutes and 17.9 to 22.4 of 20; cells with ``"stop": "clock"`` spend their budget to within one step. The
  end-of-training sweep runs as in any ``rud_train``; the fold's own test prediction is skipped (``--no-test``).
- MONAI's RetinaNet, twice: ``monai`` with the tutorial's ResNet50-FPN, and ``monai_plan`` with MONAI's ResNet and
  FPN at the sizes of the plan's own network (``peer_monai.py --backbone plan``; the rest of the recipe is the
  tutorial's), since on a CPU the tutorial's network takes only a handful of steps in minutes.
  ``--models`` picks. Each: one run per budget and seed (``--minutes M``): the tutorial's learning-rate schedule is
  mapped onto the budget, so a longer budget is a new run, not a continued one.
- "minutes" are minutes of training steps (sampling and augmentation included) on this machine: for
  ``rud_train`` the sum of the epochs' seconds in its history (validations, the sweep and prediction come on
  top), for the peer its budget. Each cell records the minutes it actually spent.

Every seed has a root of its own (``<work>/seed<s>/<task>/``) that links the task's raw data, plans, splits and
preprocessed cases and holds its own ``models/`` and predictions, so no two seeds share a network and the split
is the same for all. Cells run budget by budget (all seeds and models at 5 minutes before any at 20), so a
campaign stopped part-way leaves whole points. Resumable: a finished cell (model, seed, budget) is
``<out>/cells/<key>.json``, beside the report it feeds (so it can be kept with it); a rerun skips it, and a
``rud_train`` run interrupted mid-budget resumes from its last checkpoint. A project run whose seed root is gone
(a new machine, a cleaned work folder) starts again and trains the whole budget of its next cell on the clock.
After every cell ``learning_curves.csv``, ``.md`` and ``.png`` are rewritten from the cells in ``-o``.

Variants, to improve a detector by measurement: ``--variant NAME MODEL KEY=VALUE ...`` adds a detector that is
``MODEL`` (``retina_unet`` or ``retina_net``) trained and predicted with plan entries changed, as ``rud_plan
--override`` would change them (e.g. ``--variant round_anchors retina_unet anchors.ratios=[1.0]``). Its cells
are ``MODEL+NAME`` and its seed roots ``<work>/seed<s>/variants/<NAME>/<task>``, holding the changed
``plans.json``; the same seeds and budgets as the other detectors, so each variant cell pairs with its base
model's cell of the same seed. The table names each variant's changes. ``plan=NAME`` among them trains and
predicts another configuration of the task's ``plans.json`` (e.g. ``--variant 2dc retina_unet plan=2dc`` after
``rud_plan --mode 2dc`` and ``rud_preprocess``: 2D slices with context against the 3D default); its steps take
other times, so it measures its own epoch length instead of taking its base's.
A plan whose learning rate drops at a share of the budget (``training.lr_drop_at``) cannot be extended from
one budget to the next (the longer budget would run at the full rate again after an early drop), so each of its
budgets is a run of its own from scratch, in ``<seed root>/../m<minutes>/<task>``. A run that has trained past a
cell's budget (a longer budget ran first in the same work folder) is refused rather than scored as that budget.
Minutes hold as many steps as the machine allows, and machines differ (the nodules' 3D cells ran at 0.82 s per
step on one machine, 0.47 s on a later one): each cell records its training steps, and ``--paired-against NAME``
pairs the variants with a rerun of their base detector under the variant name NAME, run beside them (a variant
that changes nothing, e.g. ``network.norm=instance`` on a plan with instance norm).

Timed work: run it alone on the machine (another job beside it changes how many steps a minute holds).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from retinaunet.io import write_json
from retinaunet.training import trained_seconds

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODELS = ("retina_unet", "retina_net", "monai", "monai_plan")
MODEL_NAMES = {"retina_unet": "Retina U-Net", "retina_net": "Retina Net", "monai": "MONAI RetinaNet",
               "monai_plan": "MONAI RetinaNet, plan-sized"}
COLORS = {"retina_unet": "tab:blue", "retina_net": "tab:green", "monai": "tab:red", "monai_plan": "tab:orange"}
MONAI_BACKBONES = {"monai": "tutorial", "monai_plan": "plan"}  # peer_monai.py --backbone of each peer model
LINKED = ("dataset.json", "dataset.yaml", "dataset.yml", "raw_splitted", "preprocessed", "plans.json", "splits.json",
          "fingerprint.json")


VARIANT_BASES = ("retina_unet", "retina_net")


class CurveError(RuntimeError):
    """A stage failed or the inputs are not there; the message names the file and the fix."""


def log(msg: str) -> None:
    print(f"[learning_curves {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ roots
def seed_root(task_dir: Path, work: Path, seed: int) -> Path:
    """``<work>/seed<s>/<task>``: links to the task's inputs, its own ``models/`` (made once)."""
    root = work / f"seed{seed}" / task_dir.name
    root.mkdir(parents=True, exist_ok=True)
    return _link_inputs(task_dir, root)


def _link_inputs(task_dir: Path, root: Path) -> Path:
    """Link the task's inputs into ``root`` (those it holds already, e.g. a variant's plans, stay)."""
    for name in LINKED:
        src, dst = task_dir / name, root / name
        if src.exists() and not dst.exists():
            dst.symlink_to(src.resolve())
    return root


def base_model(model: str) -> str:
    """The detector a cell's model is: ``retina_unet+round_anchors`` -> ``retina_unet``."""
    return model.split("+", 1)[0]


def model_rank(model: str) -> tuple[int, str]:
    """Report order: the four detectors, then the variants by name."""
    return (MODELS.index(model), "") if model in MODELS else (len(MODELS), model)


def model_name(model: str) -> str:
    base, _, variant = model.partition("+")
    return f"{MODEL_NAMES[base]}, {variant}" if variant else MODEL_NAMES[base]


def parse_variant(items: list[str]) -> tuple[str, list[str]]:
    """``[NAME, MODEL, KEY=VALUE, ...]`` -> (``MODEL+NAME``, overrides); errors say what a variant looks like."""
    import re

    usage = ("--variant NAME MODEL KEY=VALUE [KEY=VALUE ...], e.g. --variant round_anchors retina_unet "
             "anchors.ratios=[1.0]")
    if len(items) < 3:
        raise CurveError(f"--variant {' '.join(items)}: too few values; {usage}")
    name, base, overrides = items[0], items[1], items[2:]
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise CurveError(f"--variant name '{name}' must be letters, digits, '_' or '-'; {usage}")
    if base not in VARIANT_BASES:
        raise CurveError(f"--variant {name}: model '{base}' must be one of {', '.join(VARIANT_BASES)}; {usage}")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise CurveError(f"--variant {name}: '{bad[0]}' must look like KEY=VALUE; {usage}")
    return f"{base}+{name}", overrides


def variant_plan(overrides: list[str] | None) -> tuple[str | None, list[str]]:
    """``plan=NAME`` among a variant's changes -> (``NAME``, the other changes): the variant trains and predicts that
    configuration of the task's ``plans.json`` (e.g. ``plan=2dc`` after ``rud_plan --mode 2dc``) instead of its
    default; (None, changes) without one."""
    from retinaunet.plans import parse_value

    chosen, changes = None, []
    for item in overrides or []:
        key, _, value = item.partition("=")
        if key.strip() == "plan":  # a value as --override reads one (plan=2dc or plan="2dc")
            chosen = str(parse_value(value.strip()))
        else:
            changes.append(item)
    return chosen, changes


def variant_root(task_dir: Path, work: Path, seed: int, model: str, overrides: list[str]) -> Path:
    """``<work>/seed<s>/variants/<name>/<task>``: the seed root of a variant, whose ``plans.json`` is the task's
    with ``overrides`` applied to its default configuration, or to the one ``plan=NAME`` names, made the default
    (written once; a root made with other changes is not overwritten)."""
    from retinaunet.io import read_json
    from retinaunet.plans import apply_overrides, load_plans, plan_names

    root = work / f"seed{seed}" / "variants" / model.split("+", 1)[1] / task_dir.name
    root.mkdir(parents=True, exist_ok=True)
    data = read_json(task_dir / "plans.json")
    chosen, changes = variant_plan(overrides)
    if chosen and "configurations" not in data:
        raise CurveError(f"{task_dir / 'plans.json'} holds one plan; plan={chosen} needs rud_plan --mode {chosen}")
    name = chosen or plan_names(task_dir / "plans.json")[1]  # default: the task's default configuration
    plans = apply_overrides(load_plans(task_dir / "plans.json", name), changes)
    if "configurations" in data:  # the changed configuration becomes the variant's default
        data = {**data, "default": name, "configurations": {**data["configurations"], name: plans.to_dict()}}
    else:
        data = plans.to_dict()
    path = root / "plans.json"
    if path.is_file() and _own_plan(read_json(path)) != _own_plan(json.loads(json.dumps(data))):
        raise CurveError(f"{path}: this variant was run with other changes; give the new changes another variant "
                         "name (or delete that folder to start it again)")
    if not path.is_file():
        write_json(data, path)
    return _link_inputs(task_dir, root)


def _own_plan(data: dict) -> tuple[str | None, dict]:
    """The configuration a variant trains (its default, with that name) from a plans document: what makes two
    variants the same; configurations added to the task later (``rud_plan --mode``) do not."""
    if "configurations" in data:
        return data.get("default"), data["configurations"].get(data.get("default"), {})
    return None, data


def _run(cmd: list[str], data_root: Path, threads: int | None, what: str) -> None:
    env = {**os.environ, "RUD_DATA": str(data_root), "TQDM_DISABLE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        cmd = cmd + ["--threads", str(threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace")
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise CurveError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


# ----------------------------------------------------------------------------------- project detectors
def _last_state(fold_dir: Path) -> dict | None:
    """Epoch and history of ``checkpoint_last.pt`` (None before the first epoch). The file is memory-mapped, so
    the weights and optimiser state it also holds are not read."""
    path = fold_dir / "checkpoint_last.pt"
    if not path.is_file():
        return None
    import torch
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return {"epoch": int(state["epoch"]), "history": state.get("history", [])}


def epochs_for(minutes: float, history: list[dict]) -> int:
    """Epochs that fill ``minutes`` of training at the seconds per epoch ``history`` measured (never fewer than it
    has already run)."""
    per_epoch = trained_seconds(history) / len(history)
    return max(len(history), int(round(60.0 * minutes / max(per_epoch, 1e-6))))


def first_schedule(plans, model: str, minutes: float, threads: int | None) -> tuple[int, int, float]:
    """(epochs, batches, seconds per step) for the first budget, from one measured step of ``model``."""
    import torch
    from retinaunet.planning.measure import measure_step_seconds
    from retinaunet.planning.schedule import budget_schedule

    if threads:
        torch.set_num_threads(threads)
    step, device = measure_step_seconds(plans, model)
    epochs, batches, _ = budget_schedule(plans, minutes, step, device)
    return epochs, batches, step


def known_batches(cells_dir: Path, model: str, seed: int, own_only: bool = False) -> int | None:
    """Batches per epoch of the first finished cell of ``model`` and ``seed`` (else, unless ``own_only``, of a
    variant's base detector and ``seed``): a run started again (its seed root lost) or a variant then has the epoch
    length, and so the validations and kept checkpoints, of the cells it is compared with. None when there is
    none."""
    cells = load_cells(cells_dir)
    for m in dict.fromkeys((model,) if own_only else (model, base_model(model))):
        found = [c for c in cells if c["model"] == m and c["seed"] == seed and c.get("batches_per_epoch")]
        if found:
            return int(min(found, key=lambda c: c["minutes"])["batches_per_epoch"])
    return None


def train_project(task_dir: Path, root: Path, model: str, seed: int, fold: int, minutes: float,
                  schedule_file: Path, threads: int | None, batches: int | None = None) -> dict:
    """Train (or extend) the seed's run of ``model`` to ``minutes``; returns what it spent.

    The epoch length (batches per epoch) is ``batches`` where given, else it comes from one measured step; once
    per model and seed, kept in ``schedule_file``. The number of epochs comes from the run itself: a new run
    trains one epoch first (no sweep), then every budget gets the epochs that fill it at the seconds per epoch the
    run has measured so far. So a step measured slow or fast (another job beside it, costs the measured step
    leaves out) does not size the budget."""
    from retinaunet.plans import load_plans

    base = base_model(model)  # a variant trains its base detector on its root's changed plans
    plans = load_plans(root / "plans.json")
    fold_dir = root / "models" / f"{base}_{plans.plan_name}" / f"fold{fold}"
    schedule = json.loads(schedule_file.read_text()) if schedule_file.is_file() else {}
    key = f"{model}_s{seed}"
    if key not in schedule:
        if batches:  # the epoch length of the finished cells this run is compared with (see known_batches)
            schedule[key] = {"batches": batches, "from": "finished cells"}
        else:
            epochs, batches, step = first_schedule(plans, base, minutes, threads)
            schedule[key] = {"estimated_epochs": epochs, "batches": batches, "step_seconds": step,
                             "first_minutes": minutes}
        write_json(schedule, schedule_file)
    batches = int(schedule[key]["batches"])
    cmd = [str(BIN / "rud_train"), str(fold), "-t", task_dir.name, "--model", base, "--seed", str(seed),
           "--no-test", "--workers", "0"]
    state = _last_state(fold_dir)
    if not state:  # a new run: one epoch (cut by the clock if it is longer than the budget) measures an epoch
        _run(cmd + ["--epochs", "1", "--batches-per-epoch", str(batches), "--force", "--no-sweep",
                    "--max-minutes", f"{minutes:g}"], root.parent,
             threads, f"rud_train ({model}, seed {seed}, first epoch)")
        state = _last_state(fold_dir)
    if trained_seconds(state["history"]) > 60.0 * minutes + 1.0:
        raise CurveError(f"{fold_dir} has trained {trained_seconds(state['history']) / 60:.2f} min, past this cell's "
                         f"{minutes:g}: a longer budget ran first in this work folder; give the shorter budget its "
                         "own work folder (--work) or delete that run to train it from scratch")
    cap = max(state["epoch"] + 1, 2 * epochs_for(minutes, state["history"]))  # the clock stops it before
    sweep = fold_dir / "sweep.json"
    done = (trained_seconds(state["history"]) >= 60.0 * minutes - 1e-3 and sweep.is_file()
            and sweep.stat().st_mtime >= (fold_dir / "checkpoint_last.pt").stat().st_mtime)
    if not done:  # else: trained and swept before an interruption
        _run(cmd + ["--epochs", str(cap), "--resume", "--max-minutes", f"{minutes:g}"], root.parent, threads,
             f"rud_train ({model}, seed {seed}, {minutes:g} min)")
        state = _last_state(fold_dir)
    return {"epochs": state["epoch"], "batches_per_epoch": batches, "stop": "clock",
            "minutes_spent": round(trained_seconds(state["history"]) / 60.0, 3),
            "steps": int(sum(int(e.get("batches") or batches) for e in state["history"])), **inference_used(fold_dir)}


def monai_steps(predictions: Path) -> dict:
    """``{"steps": N}``: the training steps of the MONAI run whose predictions are in ``predictions`` (its
    ``training_log.json`` in the model folder that its case files name); {} when they name none."""
    from retinaunet.io import read_json

    for case in sorted(predictions.glob("*.json")):
        folder = read_json(case).get("settings", {}).get("model_folder")
        log = Path(folder) / "training_log.json" if folder else None
        if log is not None and log.is_file():
            return {"steps": int(read_json(log)["steps"])}
    return {}


def inference_used(fold_dir: Path) -> dict:
    """What the run predicts with, from its end-of-training sweep: the ensemble size and mirroring it chose, and
    whether the planned settings stayed (``planned``) or the sweep's were taken; {} without a sweep."""
    from retinaunet.io import read_json

    path = fold_dir / "sweep.json"
    if not path.is_file():
        return {}
    sweep = read_json(path)
    chosen = sweep.get("chosen", {})
    return {"inference": {"checkpoints": chosen.get("checkpoints"), "mirror": chosen.get("mirror"),
                          "settings": sweep.get("decision", {}).get("chosen")}}


# ------------------------------------------------------------------------------------------------ cells
def cell_key(model: str, seed: int, minutes: float) -> str:
    return f"{model}_s{seed}_m{minutes:g}"


def score(pred_dir: Path, labels: Path, class_names: list[str]) -> dict:
    from retinaunet.evaluation.evaluate import evaluate_folder

    metrics = evaluate_folder(pred_dir, labels, (0.1,), None, class_names)
    buckets = {name: b["mAP"] for name, b in metrics["by_size"]["buckets"].items()}
    objects = {name: b["objects"] for name, b in metrics["by_size"]["buckets"].items()}
    return {"map": metrics["mAP"]["0.1"], "cpm": metrics["FROC"]["mean_CPM"], "by_size": buckets,
            "objects_by_size": objects}


def budget_root(root: Path, minutes: float) -> Path:
    """``<root's parent>/m<minutes>/<task>``: a run of its own for one budget, for a plan whose learning rate drops
    at a share of the budget (``training.lr_drop_at``): extending a shorter run would train the longer budget on
    a schedule that dropped early and went back to the full rate. Inputs and plans are links to ``root``'s."""
    own = root.parent / f"m{minutes:g}" / root.name
    own.mkdir(parents=True, exist_ok=True)
    return _link_inputs(root, own)


def run_cell(task_dir: Path, work: Path, model: str, seed: int, fold: int, minutes: float, images: Path,
             labels: Path, threads: int | None, overrides: list[str] | None = None,
             batches: int | None = None) -> dict:
    """Train ``model`` (a variant: ``MODEL+NAME`` with its plan ``overrides``) to ``minutes``, predict and score;
    ``batches``: the epoch length of a project run that starts now (see :func:`known_batches`)."""
    from retinaunet.io import read_json
    from retinaunet.plans import load_plans

    root = variant_root(task_dir, work, seed, model, overrides) if "+" in model else seed_root(task_dir, work, seed)
    if model not in MONAI_BACKBONES and load_plans(root / "plans.json").training.lr_drop_at is not None:
        root = budget_root(root, minutes)
    out = root / "predictions" / cell_key(model, seed, minutes)
    start = time.perf_counter()
    if model in MONAI_BACKBONES:
        _run([sys.executable, str(ROOT / "scripts" / "peer_monai.py"), "-t", task_dir.name, "--minutes", f"{minutes:g}",
              "--fold", str(fold), "--seed", str(seed), "-i", str(images), "-o", str(out), "--overwrite",
              "--backbone", MONAI_BACKBONES[model]],
             root.parent, threads, f"peer_monai.py ({MONAI_BACKBONES[model]} backbone, seed {seed}, {minutes:g} min)")
        spent = {"minutes_spent": float(minutes), **monai_steps(out)}
    else:
        spent = train_project(task_dir, root, model, seed, fold, minutes, work / "schedules.json", threads,
                              batches)
        _run([str(BIN / "rud_predict"), "-t", task_dir.name, "-i", str(images), "-o", str(out), "--folds", str(fold),
              "--model", base_model(model), "--overwrite"], root.parent, threads, f"rud_predict ({model}, seed {seed})")
    names = [v for _, v in sorted(read_json(task_dir / "dataset.json")["labels"].items(), key=lambda kv: int(kv[0]))]
    if overrides:
        spent["overrides"] = list(overrides)
    return {"model": model, "seed": seed, "minutes": float(minutes), "fold": fold, **spent,
            **score(out, labels, names), "wall_seconds": round(time.perf_counter() - start, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def task_cell_order(models: list[str], seeds: list[int], budgets: list[float],
                    tasks: int) -> list[tuple[int, int, str, float]]:
    """(task index, seed, model, minutes), budget by budget in rising order, then task, seed and model: every
    task, seed and model reaches a budget before any goes on to the next, so a campaign stopped part-way (it spans
    days on a CPU) leaves whole points with all their seeds. A project run is extended from its last budget
    later."""
    return [(t, s, m, b) for b in sorted(budgets) for t in range(tasks) for s in seeds for m in models]


def cell_order(models: list[str], seeds: list[int], budgets: list[float],
               tasks: int = 1) -> list[tuple[int, str, float]] | list[tuple[int, int, str, float]]:
    """``task_cell_order``; for one task without the task index: (seed, model, minutes)."""
    order = task_cell_order(models, seeds, budgets, tasks)
    return [c[1:] for c in order] if tasks == 1 else order


# ----------------------------------------------------------------------------------------------- report
def load_cells(cells_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cells_dir.glob("*.json"))]


def _spread(values: list[float | None]) -> str:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "-"
    if len(v) == 1:
        return f"{100 * v[0]:.1f} (1 seed)"
    return f"{100 * np.mean(v):.1f} ({100 * min(v):.0f}-{100 * max(v):.0f})"


def buckets_with_objects(cells: list[dict]) -> list[str]:
    names: list[str] = []
    for c in cells:
        for name, n in c.get("objects_by_size", {}).items():
            if n and name not in names:
                names.append(name)
    return names


def markdown_table(cells: list[dict], task: str, against: str | None = None) -> str:
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for c in cells:
        groups[(c["model"], c["minutes"])].append(c)
    buckets = buckets_with_objects(cells)
    objects = {b: max(c.get("objects_by_size", {}).get(b, 0) for c in cells) for b in buckets}
    head = ["detector", "budget (min)", "seeds", "minutes spent", "training steps", "mAP@0.1", "CPM"]
    head += [f"AP@0.1 {b} mm ({objects[b]})" for b in buckets]
    lines = [f"### Learning curves: {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in sorted({c["model"] for c in cells}, key=model_rank):
        for minutes in sorted({m for mo, m in groups if mo == model}):
            g = groups[(model, minutes)]
            row = [model_name(model), f"{minutes:g}", str(len(g)),
                   f"{np.mean([c['minutes_spent'] for c in g]):.1f}", _steps(g), _spread([c["map"] for c in g]),
                   _spread([c["cpm"] for c in g])]
            row += [_spread([c["by_size"].get(b) for c in g]) for b in buckets]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Held-out scores in %: mean over the seeds (min-max in brackets); per size bucket the mean AP@0.1 "
              "over classes of the objects of that axial diameter (held-out objects in brackets in the header). "
              "Training steps: the mean over the seeds of the batches trained (- where a cell does not record them, "
              "as MONAI's first cells did not): a budget in minutes holds as many steps as the machine of the day "
              "allows, so cells run on different days compare only with their steps in view."]
    changes = {c["model"]: c.get("overrides") for c in cells if "+" in c["model"]}
    if changes:
        lines += ["", "Variants (plan entries changed, everything else as their base detector): " + "; ".join(
            f"{model_name(m)}: {' '.join(changes[m] or [])}" for m in sorted(changes, key=model_rank)) + "."]
        lines += ["", *paired_table(cells, buckets, against)]
    return "\n".join(lines) + "\n"


def _steps(group: list[dict]) -> str:
    """Mean training steps of a group of cells, or - unless every cell records them."""
    steps = [c.get("steps") for c in group]
    return "-" if None in steps else f"{np.mean(steps):.0f}"


def paired_table(cells: list[dict], buckets: list[str], against: str | None = None) -> list[str]:
    """Each variant against its base detector on the same seeds and budget: the mean difference in points and
    the seeds where the variant scored higher (of the seeds both finished). ``against``: a variant name; every
    other variant of a detector that has cells of it is paired with those instead (a rerun of the base detector
    under a variant's name, run on the same machine as the variants: see ``--paired-against``)."""
    index = {(c["model"], c["seed"], c["minutes"]): c for c in cells}
    models = {c["model"] for c in cells}

    def base_of(model: str) -> str:
        rerun = f"{base_model(model)}+{against}"
        return rerun if against and rerun != model and rerun in models else base_model(model)

    head = ["variant - base", "budget (min)", "seeds", "steps, variant / base", "mAP@0.1", "CPM"]
    head += [f"AP@0.1 {b} mm" for b in buckets]
    lines = ["Paired by seed: points of the variant minus its base detector (seeds where the variant is higher); "
             "the ratio of their mean training steps (far from 1: the variant steps faster or slower, or the two "
             "ran on machines of other speeds).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    metrics = [lambda c: c["map"], lambda c: c["cpm"]] + [lambda c, b=b: c["by_size"].get(b) for b in buckets]
    for model in sorted({c["model"] for c in cells if "+" in c["model"]}, key=model_rank):
        for minutes in sorted({c["minutes"] for c in cells if c["model"] == model}):
            base = base_of(model)
            pairs = [(c, index[(base, c["seed"], minutes)]) for c in cells
                     if c["model"] == model and c["minutes"] == minutes and (base, c["seed"], minutes) in index]
            if not pairs:
                continue
            steps = [(v.get("steps"), b.get("steps")) for v, b in pairs]
            ratio = ("-" if any(None in sb for sb in steps) else
                     f"{np.mean([v for v, _ in steps]) / max(np.mean([b for _, b in steps]), 1.0):.2f}")
            label = model_name(model) + (f" - {model_name(base)}" if base != base_model(model) else "")
            row = [label, f"{minutes:g}", str(len(pairs)), ratio]
            for get in metrics:
                d = [100 * (get(v) - get(b)) for v, b in pairs if get(v) is not None and get(b) is not None]
                row.append(f"{np.mean(d):+.1f} ({sum(x > 0 for x in d)}/{len(d)})" if d else "-")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _panels(cells: list[dict]) -> list[tuple[str, object]]:
    panels = [("mAP@0.1", lambda c: c["map"]), ("CPM", lambda c: c["cpm"])]
    return panels + [(f"AP@0.1, {b} mm", lambda c, b=b: c["by_size"].get(b)) for b in buckets_with_objects(cells)]


def model_style(model: str, models: list[str]) -> tuple[str, str, object, bool]:
    """(colour, marker, line style, filled) of ``model`` among ``models``: a detector its colour, round filled
    markers and a solid line; a variant its base's colour with its own hollow marker and dashes (by name order
    among the variants of ``models``, so one variant looks the same in every panel and task)."""
    from retinaunet.evaluation.plots import variant_style

    return (COLORS[base_model(model)], *variant_style(model, models), "+" not in model)


def _draw_row(axes, cells: list[dict], label: str | None, models: list[str]) -> None:
    """One task's panels (mAP, CPM, each size bucket) into ``axes``: the mean over seeds per budget as a line,
    the min-max band and every seed's point at the minutes it spent (``models``: every model of the figure,
    for consistent styles)."""
    budgets = sorted({c["minutes"] for c in cells})
    spent = [c["minutes_spent"] for c in cells] + budgets
    for ax, (name, get) in zip(axes, _panels(cells)):
        for model in sorted({c["model"] for c in cells}, key=model_rank):
            mine = [c for c in cells if c["model"] == model and get(c) is not None]
            if not mine:
                continue
            color, marker, line, filled = model_style(model, models)
            xs = sorted({c["minutes"] for c in mine})
            vals = [[get(c) for c in mine if c["minutes"] == x] for x in xs]
            ax.plot(xs, [np.mean(v) for v in vals], marker=marker, linestyle=line, color=color,
                    markerfacecolor=color if filled else "none", label=model_name(model))
            ax.fill_between(xs, [min(v) for v in vals], [max(v) for v in vals], color=color,
                            alpha=0.15 if filled else 0.05, linewidth=0)
            ax.scatter([c["minutes_spent"] for c in mine], [get(c) for c in mine], s=8 if filled else 12,
                       marker=marker, facecolors=color if filled else "none", edgecolors=color, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlim(min(spent) / 1.5, max(spent) * 1.5)  # a single budget gets a readable span too
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.minorticks_off()
        ax.set_title(name if label is None else f"{label}: {name}", fontsize=9)
        ax.set_xlabel("minutes of training")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out score")


def plot(rows: list[tuple[str, list[dict]]], path: Path, title: str) -> None:
    """One row of panels per task (``rows``: (task, its cells)), written atomically to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(len(_panels(cells)) for _, cells in rows)
    models = sorted({c["model"] for _, cells in rows for c in cells}, key=model_rank)
    legend_in = 0.2 + 0.22 * -(-len(models) // 4)  # inches below the panels for the legend's rows
    height = 3.4 * len(rows) + legend_in
    fig, axes = plt.subplots(len(rows), width, figsize=(3.6 * width, height), sharey=True, squeeze=False)
    for r, (task, cells) in enumerate(rows):
        _draw_row(axes[r], cells, task if len(rows) > 1 else None, models)
        for ax in axes[r][len(_panels(cells)):]:
            ax.set_visible(False)
    handles: dict[str, object] = {}  # one legend for the figure, below the panels, every model once
    for ax in axes.flat:
        for h, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 4), fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(cells_dir: Path, out: Path, task: str, against: str | None = None) -> None:
    cells = load_cells(cells_dir)
    if not cells:
        return
    out.mkdir(parents=True, exist_ok=True)
    cols = ["model", "seed", "minutes", "minutes_spent", "steps", "fold", "map", "cpm", "epochs", "batches_per_epoch",
            "wall_seconds", "finished"]
    buckets = buckets_with_objects(cells)
    with open(out / "learning_curves.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols + [f"ap_{b}" for b in buckets], extrasaction="ignore")
        w.writeheader()
        for c in sorted(cells, key=lambda c: (model_rank(c["model"]), c["minutes"], c["seed"])):
            w.writerow({**c, **{f"ap_{b}": c["by_size"].get(b) for b in buckets}})
    (out / "learning_curves.md").write_text(markdown_table(cells, task, against))
    plot([(task, cells)], out / "learning_curves.png",
         f"{task}: held-out scores against minutes of training; line: mean over seeds, band: min-max")


def write_combined(tasks: list[tuple[str, Path]], out: Path, against: str | None = None) -> None:
    """With several tasks: ``out/learning_curves.md`` (every task's table) and ``.png`` (a row per task)."""
    rows = [(task, cells) for task, cells_dir in tasks if (cells := load_cells(cells_dir))]
    if not rows:
        return
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(markdown_table(cells, task, against) for task, cells in rows)
    (out / "learning_curves.md").write_text(text)
    plot(rows, out / "learning_curves.png",
         "held-out scores against minutes of training; line: mean over seeds, band: min-max, dots: seeds")


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-t", "--task", required=True, nargs="+",
                   help="task number(s) or name(s) (under $RUD_DATA), preprocessed; with several, every task runs "
                        "each budget before the next, -o gets a folder per task and a figure of all")
    p.add_argument("--minutes", type=float, nargs="+", default=[5.0, 20.0, 60.0], help="training budgets")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME MODEL KEY=VALUE",
                   help="also run MODEL (retina_unet or retina_net) with plan entries changed, as a detector named "
                        "MODEL+NAME, e.g. --variant round_anchors retina_unet anchors.ratios=[1.0]; plan=NAME among "
                        "the changes trains that configuration of plans.json (e.g. plan=2dc); repeatable")
    p.add_argument("--fold", type=int, default=0, help="fold of splits.json: train and val cases")
    p.add_argument("-i", "--images", type=Path, default=None, help="held-out images (default: imagesTs)")
    p.add_argument("-l", "--labels", type=Path, default=None, help="their labels (default: labelsTs)")
    p.add_argument("--work", type=Path, default=None,
                   help="seed roots: links to the task, the networks and predictions (default: <task>/learning_curves; "
                        "with several tasks <work>/<task>)")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="folder for the finished cells (cells/<key>.json) and learning_curves.csv/.md/.png (with "
                        "several tasks: <out>/<task>/ and the combined learning_curves.md/.png in <out>)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of every stage (default: as rud_train)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the table and the figure")
    p.add_argument("--paired-against", metavar="NAME",
                   help="pair each variant with the cells of the variant NAME of its detector instead of the "
                        "detector's own (e.g. after --variant inorm retina_unet network.norm=instance, a rerun of a "
                        "plan that has instance norm: base cells of the same machine as the variants, where the "
                        "detector's own cells ran on a machine of another speed)")
    args = p.parse_args(argv)

    from retinaunet.cli_errors import run_command
    from retinaunet.layout import TaskPaths

    def prepare(task: str):
        paths = TaskPaths.from_task(task)
        if not paths.plans.is_file():
            raise CurveError(f"{paths.plans}: not found; run rud_plan -t {paths.name} and rud_preprocess first")
        if not paths.splits.is_file():  # the folds rud_train would make, written once for every seed and model
            from retinaunet import store
            from retinaunet.plans import load_plans
            from retinaunet.training.splits import load_or_create_splits

            classes = store.case_classes(paths.preprocessed(load_plans(paths.plans).plan_name))
            if not classes:
                raise CurveError(f"{paths.root}: no preprocessed cases; run rud_preprocess -t {paths.name}")
            load_or_create_splits(paths, classes)
        if args.work is None:
            work = paths.root / "learning_curves"
        else:
            work = args.work if len(args.task) == 1 else args.work / paths.name
        images, labels = args.images or paths.images_ts, args.labels or paths.labels_ts
        out = args.out if len(args.task) == 1 else args.out / paths.name
        return paths, work.resolve(), Path(images), Path(labels), out

    def go() -> None:
        if min(args.minutes) <= 0:
            raise CurveError(f"--minutes must be positive, got {args.minutes}")
        if len(args.task) > 1 and (args.images or args.labels):
            raise CurveError("-i/-l name one task's held-out images; with several tasks each uses its imagesTs and "
                             "labelsTs (run one task per command to pass other folders)")
        variants = dict(parse_variant(v) for v in args.variant)
        if len(variants) < len(args.variant):
            raise CurveError("--variant: two variants have the same model and name; give each its own name")
        tasks = [prepare(t) for t in args.task]
        for *_, out in tasks:  # the finished cells live with the report, so a lost work folder loses no result
            (out / "cells").mkdir(parents=True, exist_ok=True)

        def report(index: int | None = None) -> None:
            for k, (paths, _, _, _, out) in enumerate(tasks):
                if index is None or k == index:
                    write_report(out / "cells", out, paths.name, args.paired_against)
            if len(tasks) > 1:
                write_combined([(paths.name, out / "cells") for paths, *_, out in tasks], args.out, args.paired_against)

        if args.report_only:
            report()
            return
        for paths, _, images, labels, _ in tasks:
            for folder in (images, labels):
                if not folder.is_dir():
                    raise CurveError(f"{folder}: not a folder; pass {paths.name}'s held-out images and labels "
                                     "with -i and -l")
        order = task_cell_order(list(args.models) + list(variants), args.seeds, args.minutes, len(tasks))
        todo = [c for c in order if not (tasks[c[0]][4] / "cells" / f"{cell_key(c[2], c[1], c[3])}.json").exists()]
        names = ", ".join(paths.name for paths, *_ in tasks)
        log(f"{names}: {len(order)} cells, {len(order) - len(todo)} already done")
        start = time.perf_counter()
        for i, (t, seed, model, minutes) in enumerate(todo):
            paths, work, images, labels, out = tasks[t]
            # a variant of another configuration steps at another speed: it measures its own epoch length
            other_plan = variant_plan(variants.get(model))[0] is not None
            batches = known_batches(out / "cells", model, seed, own_only=other_plan)
            record = run_cell(paths.root, work, model, seed, args.fold, minutes, images, labels, args.threads,
                              variants.get(model), batches)
            write_json(record, out / "cells" / f"{cell_key(model, seed, minutes)}.json")
            report(t)
            elapsed = time.perf_counter() - start
            log(f"{i + 1}/{len(todo)} {paths.name} {cell_key(model, seed, minutes)}: mAP@0.1 "
                f"{record['map'] or 0.0:.3f}, CPM {record['cpm'] or 0.0:.3f} ({record['minutes_spent']:.1f} min of "
                f"training; {elapsed / 60:.1f} min so far)")
        report()
        log(f"done: {args.out}")

    return run_command("learning_curves", go)


if __name__ == "__main__":
    if not sys.stderr.isatty():  # a log file: the per-cell lines, not progress-bar frames
        os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
