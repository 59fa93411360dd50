"""`rud_plan` as a function: validate, fingerprint, plan, apply overrides, write ``plans.json``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from loguru import logger
from retinaunet.planning.budget import Budget
from retinaunet.planning.fingerprint import fingerprint_warnings, load_or_compute_fingerprint
from retinaunet.planning.planner import plan_from_fingerprint

from retinaunet.convert.writer import has_true_outlines
from retinaunet.dataset import check_dataset
from retinaunet.layout import TaskPaths
from retinaunet.plans import Plans, apply_overrides, save_task_plans

__all__ = ["plan_task", "summary_table", "proposals"]


def plan_task(task: str | int | os.PathLike, mode: str | None = None, gpu_memory: float | None = None,
              overrides: Sequence[str] = (), workers: int = 0, force: bool = False,
              budget: Budget | None = None, validate: bool = True,
              train_minutes: float | None = None) -> tuple[Plans, bool]:
    """Plan a task and write its ``fingerprint.json`` and ``plans.json``.

    ``plans.json`` holds one configuration per plan name: ``mode`` None plans the planner's own choice and
    makes it the default; a named mode (2d, 2dc, 3d, 3dlr) adds that configuration beside the others.
    ``train_minutes``: a training-time budget; the schedule is sized from one measured training step
    (:mod:`retinaunet.planning.schedule`).
    Returns (plans, written): ``written`` is False when ``plans.json`` already held exactly these plans
    (an unchanged rerun rewrites nothing). Raises `DatasetError` listing every problem of a bad dataset.
    """
    paths = TaskPaths(Path(task)) if Path(str(task)).is_dir() else TaskPaths.from_task(task)
    if validate:
        check_dataset(paths.root, progress=True)
    fp, _ = load_or_compute_fingerprint(paths.root, workers=workers, force=force)
    for line in fingerprint_warnings(fp):
        logger.warning(line)
    plans = plan_from_fingerprint(fp, mode=mode, budget=budget, gpu_memory=gpu_memory)
    if not has_true_outlines(paths.root):
        plans.override("training.seg_loss_weight", 0.0, source="dataset.json")
        plans.reasons["training.seg_loss_weight"] = ("dataset.json: seg_supervision false (label maps painted "
                                                        "from boxes or points), so no segmentation loss")
    if train_minutes is not None:
        from retinaunet.planning.measure import measure_step_seconds
        from retinaunet.planning.schedule import apply_train_minutes

        seconds, device = measure_step_seconds(plans)
        apply_train_minutes(plans, train_minutes, seconds, device)
    if overrides:
        apply_overrides(plans, overrides)
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            plans.reasons[key] = "set by --override"
            section = key.split(".")[0]
            if section != key and section in plans.reasons:  # the section's reason no longer tells the whole
                plans.reasons[section] = f"{key} set by --override; planned: {plans.reasons[section]}"
    written = save_task_plans(plans, paths.plans, default=True if mode is None else None)
    logger.info(f"{'wrote' if written else 'unchanged:'} {paths.plans} [{plans.plan_name}]")
    return plans, written


def proposals(task: str | int | os.PathLike, plans: Plans) -> list[tuple[str, str]]:
    """The configurations that fit the task's data (see :func:`retinaunet.planning.planner.propose_plans`)."""
    from retinaunet.planning.planner import propose_plans

    paths = TaskPaths(Path(task)) if Path(str(task)).is_dir() else TaskPaths.from_task(task)
    fp, _ = load_or_compute_fingerprint(paths.root, workers=0)
    return propose_plans(fp, plans)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


# section entries the named rows of the table already show
_IN_ROWS = {"network.strides", "network.start_channels", "network.fpn_channels", "network.head_channels",
            "network.block", "network.blocks_per_stage", "network.norm", "network.head_levels", "anchors.base_sizes",
            "anchors.z_base_sizes", "anchors.coverage", "anchors.coverage_by_size", "matching.method",
            "training.epochs", "training.batches_per_epoch", "inference.patch_size", "inference.checkpoints",
            "inference.mirror", "crop.method", "crop.channel", "crop.threshold", "crop.margin_mm"}


def summary_table(plans: Plans) -> str:
    """The main choices and their reasons as a plain-text table: the named rows, then every other section
    entry (``section.key``) that differs from the schema's default."""
    net, anchors = plans.network, plans.anchors
    rows = [
        ("mode", plans.mode, "mode"),
        ("target spacing", _fmt(plans.target_spacing), "target_spacing"),
        ("patch size", _fmt(plans.patch_size), "patch_size"),
        ("batch size", str(plans.batch_size), "batch_size"),
        ("input channels", str(plans.in_channels), "mode"),
        ("network", f"{net.block} {net.blocks_per_stage} start {net.start_channels} "
                    f"fpn {net.fpn_channels} head {net.head_channels}", "network"),
        ("strides", _fmt(net.strides), "network"),
        ("norm layers", net.norm, "norm"),
        ("head levels", ", ".join(f"P{k}" for k in net.head_levels), "head_levels"),
        ("anchors", f"{_fmt(anchors.base_sizes)}"
                    + (f" z {_fmt(anchors.z_base_sizes)}" if anchors.z_base_sizes else "")
                    + f" grid coverage {anchors.coverage:.1%}", "anchors"),
        ("matching", plans.matching.method, "matching"),
        ("normalisation", ", ".join(n["scheme"] for n in plans.normalization), "normalization"),
        ("crop", plans.crop.method + (f" (modality {plans.crop.channel} > {plans.crop.threshold:g} HU, "
                                      f"+{plans.crop.margin_mm:g} mm)" if plans.crop.method == "body" else ""), "crop"),
        ("training", f"{plans.training.epochs} x {plans.training.batches_per_epoch} batches", "training"),
        ("inference tile", _fmt(plans.inference_patch_size), "inference_patch"),
        ("ensemble", f"{plans.inference.checkpoints or plans.training.keep_best} checkpoint(s) x "
                     f"{2 ** plans.dim if plans.inference.mirror else 1} view(s)", "ensemble"),
        ("budget", "", "budget"),
    ]
    reasons = plans.reasons
    rows += [(key, _fmt(value), key) for key, value in plans.changed_from_defaults().items() if key not in _IN_ROWS]
    width = max(len(r[0]) for r in rows)
    vwidth = min(44, max(len(r[1]) for r in rows))
    lines = [f"{'entry':<{width}}  {'value':<{vwidth}}  reason", "-" * (width + vwidth + 60)]
    for name, value, key in rows:
        section = key.split(".")[0]
        reason = reasons.get(key) or (f"(see {section})" if "." in key and section in reasons else "")
        lines.append(f"{name:<{width}}  {value:<{vwidth}}  {reason}")
    by_size = plans.anchors.coverage_by_size
    if by_size:
        lines += ["", coverage_rows(by_size, plans.matching.iou_high)]
    return "\n".join(lines)


def coverage_rows(by_size: dict, iou_high: float) -> str:
    """The plan's anchor coverage per object size (objects dropped at random offsets on the real grid)."""
    head = ["object size", "objects", f"anchor IoU>={iou_high:g}", "median best IoU", "matched", "positives",
            "IoU of positives"]
    rows = []
    for name, r in by_size.items():
        if not r.get("objects"):
            rows.append([f"{name} mm", "0", "-", "-", "-", "-", "-"])
            continue
        rows.append([f"{name} mm", str(r["objects"]), f"{100 * r['grid_coverage']:.0f}%", f"{r['median_best_iou']:.2f}",
                     f"{100 * r['matched']:.0f}%" if r.get("matched") is not None else "-",
                     f"{r['median_positives']:g}" if r.get("median_positives") is not None else "-",
                     f"{r['positive_iou']:.2f}" if r.get("positive_iou") is not None else "-"])
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    fmt = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(x, widths)))
           for x in [head, *rows]]
    return "\n".join(["anchor coverage on the real grid (objects at random offsets; matched: objects with a "
                      "positive from the planned matcher, median positives and their mean IoU)", *fmt])
