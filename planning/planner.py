"""The planner: from a dataset fingerprint and a budget to ``plans.json``, every choice with its reason.

Rules (see DESIGN.md, "Plans"):
- target spacing: per-axis median; on an anisotropic axis (coarsest median spacing > 3x the finest)
  the 10th percentile of that axis, but not finer than the other axes (nnU-Net's rule);
- mode: 2d for 2D data; for 3D data 3d, or 2dc (the slice and +-3 neighbours as channels) when the
  target spacing is strongly anisotropic (ratio >= ``STRONG_ANISOTROPY``);
- patch, batch and network from `retinaunet.planning.topology` under the budget;
- anchors from `retinaunet.planning.anchors_plan` on the training objects at target spacing;
- normalisation: CT clipped to object-voxel 0.5/99.5 percentiles and standardised with their mean
  and std; other modalities standardised per case;
- crop: CT to the body unless a training object lies outside it (`retinaunet.planning.crop_rule`), else the
  non-zero voxels; shapes (median image, dataset voxels) are measured after that crop;
- norm layers: batch norm on a CPU when the batch holds >= 5 patches (then inference tiles may be larger
  than the patch: whole images where they are small enough), else instance norm and inference tiles of the
  training patch size; a CPU patch that leaves a smaller batch shrinks towards the objects' size until 5 fit
  (see ``BATCH_NORM_MIN_BATCH``);
- head levels: P2-P5 without duplicate strides, P1 for many small objects (`retinaunet.planning.topology`);
- anchors no smaller than their level's stride; coverage measured on the real anchor grid per object size
  (`retinaunet.planning.coverage`);
- matching: negative below IoU 0.4, positive from 0.5 (see ``IOU_LOW``) when the real grid gives >= 90% of
  the objects of every size bucket an anchor at 0.5; otherwise adaptive (ATSS) matching;
- training length from the budget; Adam at the paper's 1e-4 on a GPU, 1e-3 for the short CPU schedule;
- inference ensemble (kept checkpoints x mirrored views): all of them on a GPU (the paper); on a CPU the
  largest that predicts the median case within ``CPU_CASE_SECONDS`` (see there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from retinaunet.planning.anchors_plan import DEFAULT_RATIOS, DEFAULT_SCALES, optimise_anchors
from retinaunet.planning.budget import CPU_FLOPS, Budget, default_budget
from retinaunet.planning.coverage import choose_matching, format_coverage
from retinaunet.planning.crop_rule import choose_crop, cropped_shape
from retinaunet.planning.topology import POOL_SPACING_RATIO, choose_head_levels, fit_patch_and_batch, level_strides

from retinaunet.anchors import AnchorGenerator
from retinaunet.plans import (
    AnchorsPlan,
    CropPlan,
    InferencePlan,
    MatchingPlan,
    NetworkPlan,
    Plans,
    TrainingPlan,
    cumulative_stride,
)
from retinaunet.tiles import tile_starts

__all__ = ["plan_from_fingerprint", "propose_plans", "choose_target_spacing", "choose_mode", "plan_normalization",
           "object_sizes", "STRONG_ANISOTROPY", "CONTEXT_SLICES"]

ANISOTROPY = 3.0
STRONG_ANISOTROPY = 4.0
CONTEXT_SLICES = 3
# CPU patch: this many times the large (95th percentile) objects, per axis. A short CPU schedule learns from
# the objects it sees: on the shapes toy, 64x64 x 32 patches (1.5x) told the classes apart within 600 steps
# where 128x128 x 8 (3x, the same compute per step) had not after 1000
PATCH_CONTEXT = 1.5
# Adam's learning rate: the paper's 1e-4 for the long GPU schedule; the CPU's ~1000 steps need 1e-3 (shapes
# toy: classes told apart within 600 steps at 1e-3, not after 1000 at 1e-4)
GPU_LR, CPU_LR = 1e-4, 1e-3
# Matching: the paper negates anchors below IoU 0.1 (2D) / 0.01 (3D) and ignores them up to 0.5. Ignored
# anchors are never trained, and the finer level's anchors inside an object (IoU ~0.25 with it) then fire at
# test time with half-size boxes (measured on the shapes toy: they were the top-scoring boxes of every
# image). RetinaNet's 0.4 makes them negatives.
IOU_LOW, IOU_HIGH = 0.4, 0.5
CPU_TRAIN_SECONDS = 300.0
# Every epoch predicts the val cases whole to choose the kept epochs. Cheap for the 2D toys (40 images of
# 320 x 320: a few seconds), but the CT-scale nodule task's 7 val volumes take about 40 s per epoch, more
# than its training steps (about 30 s). When 10 validations would cost more than this share of the training
# time, a CPU plan trains 5 longer epochs instead (the same steps, half the validation).
CPU_VAL_SHARE = 0.5
VAL_FRACTION = 0.2  # val cases of a fold of the default 5-fold split (60 / 20 / 20)
INFER_TILE_FACTOR = 64  # CPU: predict the whole median image in one tile when it is at most this x the patch
# Instance norm's statistics depend on the extent of the input: a network trained on 64x64 patches of the
# shapes toy reached val mAP 0.99 on 64-px tiles but 0.49-0.83 on whole 320x320 images. A CPU plan predicts
# whole images (one pass instead of dozens of tiles), so it uses batch norm, whose eval statistics are
# fixed, when its batch can estimate them; otherwise (and on GPUs) instance norm and training-patch tiles.
# Below that batch a CPU plan trades context for batch: the patch shrinks towards the objects' own size (the
# 95th percentile, from 1.5x) until this batch fits the same step budget. Held-out mAP@0.1 after 5 minutes on
# two cores, 3 seeds (docs/peer.md): the CT-like nodules 35.9 -> 56.7 (24 x 48 x 56 x 2 with instance norm ->
# 20 x 32 x 40 x 5 with batch norm), the same at 2.5 mm slices 42.4 -> 62.2, each seed higher; large spheres,
# near the ceiling already, level (-1.9 bright, +2.6 faint, 2 seeds each).
BATCH_NORM_MIN_BATCH = 5
GPU_EPOCHS, GPU_BATCHES = 100, 200
# CPU inference: the ensemble of kept checkpoints x mirrored views multiplies the cost of a case; it also
# multiplies the end-of-training sweep, which predicts every val case with the whole ensemble. On the 2D
# toys the whole ensemble (5 x 4 views of a 320 x 320 image) costs about 1.5 s per case; on the CT-scale
# nodule task (60 tiles of 24 x 48 x 56 per volume) one view costs about 6 s and the whole ensemble (5 x 8)
# about 4 minutes, i.e. 1.5 hours for its 24 test volumes on two cores. A CPU plan keeps the largest
# ensemble that predicts the median case in this many seconds (estimated from the forward FLOPs at CPU_FLOPS).
CPU_CASE_SECONDS = 10.0


def choose_target_spacing(spacings: np.ndarray) -> tuple[list[float], str]:
    """Target spacing from the cases' spacings ``[N, d]`` (array order) and the reason."""
    spacings = np.asarray(spacings, dtype=np.float64)
    target = np.median(spacings, axis=0)
    reason = f"per-axis median of {len(spacings)} cases"
    worst = int(np.argmax(target))
    others = np.delete(target, worst)
    if len(others) and target[worst] > ANISOTROPY * target.min():
        low = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(low, float(others.max()))
        reason += (f"; axis {worst} is anisotropic (median {np.median(spacings[:, worst]):.3g} > "
                   f"{ANISOTROPY:g}x {target.min():.3g}), so its 10th percentile {low:.3g} (not finer than "
                   "the other axes) to keep resolution")
    return [round(float(t), 6) for t in target], reason


def propose_plans(fp: Mapping[str, Any], plans: Plans) -> list[tuple[str, str]]:
    """The configurations that fit the data, each with its reason; ``plans`` is the planner's own choice.

    2D images: ``2d``. 3D images: ``3d`` and ``2dc`` (the paper finds them trading places by task), ``2d``,
    and ``3dlr`` where the 3d patch cannot hold the largest objects with context (objects large relative to
    the images).
    """
    if int(fp["dim"]) == 2:
        return [("2d", "the images are 2D")]
    out = [("3d", "volumetric network"), ("2dc", f"slices with +-{CONTEXT_SLICES} neighbours as channels"),
           ("2d", "single slices, merged into 3D boxes")]
    if plans.dim == 3:
        sizes = object_sizes(fp, plans.target_spacing, [0, 1, 2])
        if len(sizes):
            large = np.percentile(sizes, 95, axis=0)
            if any(p < PATCH_CONTEXT * s for p, s in zip(plans.patch_size, large)):
                out.append(("3dlr", f"the 3d patch {plans.patch_size} holds less than {PATCH_CONTEXT:g}x the "
                                    f"95th-percentile object {np.round(large, 1).tolist()}: half resolution"))
    chosen = plans.plan_name
    return sorted(out, key=lambda item: item[0] != chosen)


def choose_mode(data_dim: int, target_spacing: Sequence[float], requested: str | None = None) -> tuple[str, str]:
    """``2d`` | ``2dc`` | ``3d`` and the reason."""
    if requested is not None:
        if requested not in ("2d", "2dc", "3d"):
            raise ValueError(f"mode must be 2d, 2dc or 3d, got '{requested}'")
        if data_dim == 2 and requested != "2d":
            raise ValueError(f"mode {requested} needs 3D images; this dataset is 2D (use --mode 2d)")
        return requested, "set by --mode"
    if data_dim == 2:
        return "2d", "the images are 2D"
    ratio = max(target_spacing) / min(target_spacing)
    if ratio >= STRONG_ANISOTROPY:
        return "2dc", (f"strongly anisotropic data (spacing ratio {ratio:.1f} >= {STRONG_ANISOTROPY:g}): "
                       f"2D slices with +-{CONTEXT_SLICES} neighbouring slices as channels, as the paper's 2Dc")
    return "3d", f"3D images with spacing ratio {ratio:.1f} < {STRONG_ANISOTROPY:g}: volumetric network"


def plan_normalization(fp: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """One scheme per modality (CT: dataset-wide clip + standardise; others: per-case z-score)."""
    schemes, reasons = [], []
    for stats in fp["intensity"]:
        name = str(stats.get("name", ""))
        if name.upper() == "CT" and stats.get("num_samples", 0) > 0:
            std = max(float(stats["std"]), 1e-8)
            schemes.append({"scheme": "ct", "clip": [round(stats["p0.5"], 4), round(stats["p99.5"], 4)],
                            "mean": round(float(stats["mean"]), 4), "std": round(std, 4)})
            reasons.append(f"modality {stats['modality']} is CT: clip to the object voxels' 0.5/99.5 percentiles, "
                           "standardise with their mean and std (one scale for all cases)")
        else:
            schemes.append({"scheme": "zscore"})
            why = "no object voxels to learn CT statistics" if name.upper() == "CT" else f"'{name}' is not CT"
            reasons.append(f"modality {stats['modality']}: {why}, standardise each case by its own mean and std")
    return schemes, "; ".join(reasons)


def object_sizes(fp: Mapping[str, Any], target_spacing: Sequence[float], axes: Sequence[int]) -> np.ndarray:
    """Sizes of all training objects at the target spacing along ``axes``: ndarray[N, len(axes)] voxels."""
    ts = np.asarray(target_spacing, dtype=np.float64)
    rows = [np.asarray(o["size_mm"], dtype=np.float64)[list(axes)] / ts[list(axes)]
            for case in fp["cases"] for o in case["objects"]]
    return np.asarray(rows).reshape(-1, len(axes))


def _median_shape(fp: Mapping[str, Any], ts: Sequence[float], crop: str = "nonzero") -> np.ndarray:
    shapes = [np.asarray(cropped_shape(c, crop)) * np.asarray(c["spacing"]) / np.asarray(ts) for c in fp["cases"]]
    return np.median(np.asarray(shapes), axis=0)


def _training(budget: Budget, flops: float, val_seconds: float = 0.0) -> tuple[TrainingPlan, str]:
    """Schedule of the training (Adam; the loader's workers are chosen at run time for the machine).

    ``val_seconds``: estimated CPU time of one epoch's validation (the val cases predicted whole, one view).
    """
    lr = GPU_LR if budget.kind == "gpu" else CPU_LR
    if budget.kind == "gpu":
        return (TrainingPlan(epochs=GPU_EPOCHS, batches_per_epoch=GPU_BATCHES, learning_rate=lr),
                f"GPU: {GPU_EPOCHS} epochs x {GPU_BATCHES} batches (the paper code's schedule); Adam, lr 1e-4 "
                "(paper); half the patches centred on an object")
    step = flops / CPU_FLOPS
    steps = max(50, int(CPU_TRAIN_SECONDS / max(step, 1e-3)))
    epochs = 10 if steps >= 200 else 5
    val_note = ""
    if epochs > 5 and epochs * val_seconds > CPU_VAL_SHARE * CPU_TRAIN_SECONDS:
        val_note = (f"; 5 longer epochs, as validating {epochs} times (about {val_seconds:.0f} s each) would cost "
                    f"more than {CPU_VAL_SHARE:.0%} of the training time")
        epochs = 5
    # whole scans (a chest CT: thousands of tiles) cost more to validate than the training itself: validate
    # every k-th epoch (and always the last), so the validations stay within the share where they can
    interval = min(epochs, max(1, int(math.ceil(epochs * val_seconds / (CPU_VAL_SHARE * CPU_TRAIN_SECONDS)))))
    if interval > 1:
        when = "only after the last epoch" if interval >= epochs else f"every {interval} epochs and after the last"
        val_note += (f"; validation {when} ({math.ceil(epochs / interval)} "
                     f"of about {val_seconds:.0f} s each, the val cases predicted whole), not after each of the "
                     f"{epochs}: they would cost {epochs * val_seconds / CPU_TRAIN_SECONDS:.1f}x the training time")
    per_epoch = int(math.ceil(steps / epochs))
    return (TrainingPlan(epochs=epochs, batches_per_epoch=per_epoch, learning_rate=lr, val_interval=interval),
            f"CPU: about {CPU_TRAIN_SECONDS / 60:.0f} minutes of training at an estimated {step:.2f} s per step "
            f"-> {epochs} x {per_epoch} batches{val_note}; Adam, lr {lr:g} (the paper's 1e-4 is for its long "
            "schedule); half the patches centred on an object")


def _norm(budget: Budget, batch: int) -> tuple[str, str]:
    """Normalisation layers of the network (see ``BATCH_NORM_MIN_BATCH``) and the reason."""
    if budget.kind == "cpu" and batch >= BATCH_NORM_MIN_BATCH:
        return "batch", (f"batch norm (batch {batch} >= {BATCH_NORM_MIN_BATCH}): its statistics at test time do "
                         "not depend on the tile size, so inference tiles may be larger than the training patch "
                         "(whole images where they are small enough)")
    small = f" (batch {batch} < {BATCH_NORM_MIN_BATCH} is too small for batch statistics)"
    small = small if budget.kind == "cpu" else ""
    return "instance", (f"instance norm: per-patch statistics{small}; inference tiles the training patch size so "
                        "the statistics match training")


def _view_seconds(step_flops: float, batch: int, patch: Sequence[int], tile: Sequence[int],
                  median: Sequence[int], items: int, overlap: float) -> tuple[float, int]:
    """Estimated CPU seconds of one view of the median case, and its tiles (per item).

    A forward pass is a third of a training step's FLOPs (``planning.memory`` counts backward as 2x),
    per patch of the batch, scaled to the tile's voxels; ``items``: 2D slices of a 3D case, else 1.
    """
    tiles = int(np.prod([len(tile_starts(m, t, overlap)) for m, t in zip(median, tile)]))
    per_tile = step_flops / (3.0 * max(batch, 1)) * float(np.prod(tile)) / float(np.prod(patch))
    return tiles * items * per_tile / CPU_FLOPS, tiles


def _inference_ensemble(budget: Budget, dim: int, view_seconds: float, tiles: int, items: int,
                        keep: int) -> tuple[int | None, bool, str]:
    """``inference.checkpoints`` (None: all ``keep`` kept), ``inference.mirror`` and the reason."""
    mirrors = 2 ** dim
    if budget.kind == "gpu":
        return None, True, f"GPU: every kept checkpoint ({keep}) x {mirrors} mirrored views (the paper)"
    options = [(keep, mirrors), (1, mirrors), (keep, 1), (1, 1)]  # most views first; ties: mirroring
    fits = [(k, m) for k, m in options if k * m * view_seconds <= CPU_CASE_SECONDS] or [(1, 1)]
    k, m = max(fits, key=lambda o: (o[0] * o[1], o[1]))
    where = f"{tiles} tile(s)" + (f" x {items} slices" if items > 1 else "")
    return (None if k == keep else k), m > 1, (
        f"CPU: {k} checkpoint(s) x {m} view(s), the largest ensemble that predicts the median case ({where}, "
        f"about {view_seconds:.1f} s per view) within {CPU_CASE_SECONDS:g} s; the end-of-training sweep "
        "explores up to this ensemble (more: rud_predict --override checkpoints=N mirror=true)")


def _inference_patch(budget: Budget, patch: Sequence[int], median: Sequence[int], stride: Sequence[int],
                     norm: str) -> tuple[list[int], str]:
    """Tile size for prediction: the training patch, or on a CPU the whole median image when it is small.

    The networks are fully convolutional, and a forward pass without backward needs far less memory than a
    training step, so one large tile replaces many overlapping ones (fewer tile x view passes). Only with
    batch norm: instance norm's statistics change with the tile's extent.
    """
    whole = [int(math.ceil(m / s)) * s for m, s in zip(median, stride)]
    if budget.kind == "cpu" and norm == "batch" and np.prod(whole) > np.prod(patch) and np.prod(
            whole) <= INFER_TILE_FACTOR * np.prod(patch):
        return whole, (f"CPU: the whole median image {list(median)} in one tile (made a multiple of the stride): "
                       "the network is fully convolutional and inference keeps no activations for backward")
    return list(patch), "the training patch, tiled with overlap"


def plan_from_fingerprint(fp: Mapping[str, Any], mode: str | None = None, budget: Budget | None = None,
                          gpu_memory: float | None = None) -> Plans:
    """Plans for a fingerprint (see the module docstring); ``budget`` overrides ``gpu_memory``/autodetection.

    ``mode`` "3dlr": a 3d plan at twice the target spacing (half the resolution), named ``3dlr``, for objects
    too large for the 3d plan's patch to hold with context.
    """
    reasons: dict[str, str] = {}
    data_dim = int(fp["dim"])
    num_mod = len(fp["modalities"])
    ts, reasons["target_spacing"] = choose_target_spacing(np.asarray([c["spacing"] for c in fp["cases"]]))
    plan_name = mode
    if mode == "3dlr":
        if data_dim != 3:
            raise ValueError("mode 3dlr needs 3D images; this dataset is 2D (use --mode 2d)")
        ts = [round(2 * float(t), 6) for t in ts]
        reasons["target_spacing"] = f"3dlr: twice the 3d plan's spacing; 3d: {reasons['target_spacing']}"
        mode = "3d"
    mode, reasons["mode"] = choose_mode(data_dim, ts, mode)
    plan_name = plan_name if plan_name == "3dlr" else mode
    dim = 3 if mode == "3d" else 2
    axes = list(range(data_dim))[-dim:]
    context = CONTEXT_SLICES if mode == "2dc" else 0
    in_channels = num_mod * (2 * context + 1)
    budget = budget or default_budget(dim, gpu_memory)
    reasons["budget"] = budget.describe()

    sizes = object_sizes(fp, ts, axes)
    crop, reasons["crop"] = choose_crop(fp)
    median_shape = _median_shape(fp, ts, crop["method"])
    net_spacing = [ts[a] for a in axes]
    net_median = [max(1, int(round(median_shape[a]))) for a in axes]
    floor: list[float] | None = None
    if budget.kind == "cpu" and len(sizes):
        large = np.percentile(sizes, 95, axis=0)
        initial = [min(m, max(16, int(math.ceil(PATCH_CONTEXT * s)))) for m, s in zip(net_median, large)]
        floor = [float(min(m, s)) for m, s in zip(net_median, large)]
        why_patch = f"CPU: {PATCH_CONTEXT:g}x the 95th-percentile object size per axis (capped by the median image)"
    else:
        initial = net_median
        why_patch = "start from the median image shape at target spacing"
    dataset_voxels = float(sum(np.prod(np.asarray(cropped_shape(c, crop["method"])) * np.asarray(c["spacing"])
                                       / np.asarray(ts))
                               for c in fp["cases"]))
    base = Plans(mode=mode, dim=dim, patch_size=list(initial), batch_size=1, num_classes=int(fp["num_classes"]),
                 in_channels=in_channels, target_spacing=list(ts),
                 anchors=AnchorsPlan(base_sizes=[1.0], scales=DEFAULT_SCALES, ratios=DEFAULT_RATIOS))
    pp = fit_patch_and_batch(initial, net_spacing, budget, base, net_median, dataset_voxels, sizes,
                             target_batch=BATCH_NORM_MIN_BATCH if budget.kind == "cpu" else 0, min_patch=floor)
    reasons["patch_size"] = (f"{why_patch} {initial}, shrunk (largest extent in mm first) to fit the budget and "
                             f"made a multiple of the network's stride; estimated step {pp.memory / 2**20:.0f} MB, "
                             f"{pp.flops / 1e9:.1f} GFLOP" + ("; " + "; ".join(pp.notes) if pp.notes else ""))
    reasons["batch_size"] = "largest batch within the budget (at most 5% of the dataset's voxels per batch)"
    reasons["network"] = (("paper-sized ResNet50-FPN for a GPU" if budget.kind == "gpu" else
                           "small ResNet-FPN so a CPU trains in minutes")
                          + "; an axis is pooled while its feature map keeps >= 4 voxels and its spacing is at "
                            f"most {POOL_SPACING_RATIO:g}x the finest (anisotropic axes wait)")
    high = IOU_HIGH
    levels, reasons["head_levels"] = choose_head_levels(pp.strides, sizes)
    strides_per_level = [level_strides(pp.strides, k) for k in levels]
    anchor = optimise_anchors(sizes, dim, iou_high=high, patch_size=pp.patch_size, level_strides=strides_per_level)
    gen = AnchorGenerator(anchor.base_sizes, anchor.z_base_sizes, DEFAULT_SCALES, DEFAULT_RATIOS, dim)
    clipped = np.minimum(sizes, np.asarray(pp.patch_size, dtype=np.float64)[None]) if len(sizes) else sizes
    matching, by_size, reasons["matching"] = choose_matching(clipped, net_spacing, gen, strides_per_level,
                                                             IOU_LOW, high)
    names = ", ".join(f"P{k}" for k in levels)
    reasons["anchors"] = (f"sizes per level {names} maximising the best-anchor IoU of {anchor.num_objects} training "
                          "objects at target spacing, each at random offsets to the real anchor grid "
                          f"({anchor.coverage:.1%} reach IoU >= {high}, mean {anchor.mean_iou:.2f}), none smaller "
                          f"than its level's stride; per size: {format_coverage(by_size, high)}")
    normalization, reasons["normalization"] = plan_normalization(fp)
    norm, reasons["norm"] = _norm(budget, pp.batch_size)
    infer_patch, reasons["inference_patch"] = _inference_patch(budget, pp.patch_size, net_median,
                                                               cumulative_stride(pp.strides), norm)
    items = max(1, int(round(median_shape[0]))) if data_dim > dim else 1
    view_s, tiles = _view_seconds(pp.flops, pp.batch_size, pp.patch_size, infer_patch, net_median, items,
                                  InferencePlan().tile_overlap)
    num_val = max(1, int(round(VAL_FRACTION * len(fp["cases"]))))
    training, reasons["training"] = _training(budget, pp.flops, num_val * view_s)
    checkpoints, mirror, reasons["ensemble"] = _inference_ensemble(budget, dim, view_s, tiles, items,
                                                                   training.keep_best)
    max_objects = int(fp["objects_per_case"]["max"])
    default_det = 30 if dim == 3 else 10
    reasons["inference"] = (f"paper: top {50000 if dim == 3 else 10000} candidates, NMS 0.1, at least "
                            f"{default_det} boxes per image (2x the most objects in a case)")
    plans = Plans(
        task=fp["task"], plan_name=plan_name, mode=mode, data_dim=data_dim, dim=dim,
        modalities=dict(fp["modalities"]), num_classes=int(fp["num_classes"]),
        class_names=list(fp["class_names"]), target_spacing=list(ts), context_slices=context,
        in_channels=in_channels, patch_size=pp.patch_size, batch_size=pp.batch_size,
        network=NetworkPlan(strides=pp.strides, norm=norm, head_levels=levels, **pp.network),
        anchors=AnchorsPlan(base_sizes=anchor.base_sizes, z_base_sizes=anchor.z_base_sizes, scales=DEFAULT_SCALES,
                            ratios=DEFAULT_RATIOS, coverage=round(anchor.coverage, 4), coverage_by_size=by_size),
        matching=MatchingPlan(**matching),
        normalization=normalization, training=training, crop=CropPlan(**crop),
        inference=InferencePlan(pre_nms_top_k=50000 if dim == 3 else 10000,
                                max_detections=max(default_det, 2 * max_objects), mirror_axes=list(range(dim)),
                                patch_size=infer_patch, checkpoints=checkpoints, mirror=mirror),
        reasons=reasons,
    )
    # a round trip through the schema checks every value the planner chose
    return Plans.from_dict(plans.to_dict(), source="planned plans")
