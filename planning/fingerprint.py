"""Dataset fingerprint: what the planner needs to know about the training cases (``fingerprint.json``).

Per case: shape, spacing, origin, direction, the non-zero bounding box (for CT also the body's box, see
:mod:`retinaunet.planning.crop_rule`), every object (class, box, size
in voxels and mm, volume) and per-modality image statistics. Per modality: statistics of object voxels
(percentiles, mean, std) from a bounded random sample, so memory stays flat however large the dataset.
Cases are processed in parallel, one case per worker in memory at a time.

The fingerprint records a signature of the raw files (names, sizes, modification times); when that
is unchanged an existing fingerprint is reused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from retinaunet.planning.crop_rule import BODY_MARGIN_MM, BODY_THRESHOLD_HU, ct_channel

from retinaunet.boxes import boxes_from_instance_map
from retinaunet.crop import body_box, nonzero_box
from retinaunet.dataset import Case, list_cases, load_dataset_info
from retinaunet.io import read_case, read_json, read_label, write_json
from retinaunet.layout import TaskPaths
from retinaunet.parallel import run_parallel

__all__ = ["compute_fingerprint", "fingerprint_case", "load_or_compute_fingerprint", "raw_signature",
           "FINGERPRINT_VERSION"]

FINGERPRINT_VERSION = 2  # 2: the body box of CT cases
MAX_SAMPLES_PER_MODALITY = 2_000_000
PERCENTILES = (0.5, 1.0, 5.0, 50.0, 95.0, 99.0, 99.5)


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "little")


def fingerprint_case(case: Case, samples_per_case: int = 10_000, body_channel: int | None = None) -> dict[str, Any]:
    """Fingerprint of one case, with ``_samples``: float32[C, n] object-voxel intensities (for the caller).

    ``body_channel``: a CT modality; its body box is recorded with the number of objects not inside it."""
    images, geom = read_case(case.images)
    inst, mapping = read_label(case.label, case.label_json) if case.label is not None else (None, {})
    spacing = np.asarray(geom.spacing)
    objects = []
    samples = np.zeros((images.shape[0], 0), dtype=np.float32)
    if inst is not None and inst.max(initial=0) > 0:
        boxes = boxes_from_instance_map(inst)
        volumes = np.bincount(inst.ravel().clip(min=0))
        for i, box in sorted(boxes.items()):
            size = (box[geom.dim:] - box[:geom.dim]).astype(float)
            objects.append({"id": int(i), "class": int(mapping.get(i, 0)), "box": [int(v) for v in box],
                            "size_voxels": size.tolist(), "size_mm": (size * spacing).round(4).tolist(),
                            "volume_voxels": int(volumes[i])})
        fg = np.flatnonzero(inst.ravel() > 0)
        if fg.size > samples_per_case:
            fg = np.sort(np.random.default_rng(_seed(case.name)).choice(fg, samples_per_case, replace=False))
        samples = images.reshape(images.shape[0], -1)[:, fg].astype(np.float32)
    crop = nonzero_box(images)
    body: dict[str, Any] = {}
    if body_channel is not None:
        box = body_box(images[body_channel], geom.spacing, BODY_THRESHOLD_HU, BODY_MARGIN_MM)
        outside = 0 if box is None else sum(  # without a body, the non-zero crop keeps everything
            1 for o in objects if not all(lo <= o["box"][a] and o["box"][a + geom.dim] <= hi
                                          for a, (lo, hi) in enumerate(box)))
        body = {"body_crop": box, "body_crop_shape": [hi - lo for lo, hi in box] if box else None,
                "objects_outside_body": outside}
    return {
        "case": case.name, "shape": list(geom.shape), "spacing": list(geom.spacing),
        "origin": list(geom.origin), "direction": list(geom.direction), "crop": crop,
        "crop_shape": [hi - lo for lo, hi in crop], **body, "num_objects": len(objects), "objects": objects,
        "image_stats": [{"mean": float(ch.mean()), "std": float(ch.std()), "min": float(ch.min()),
                         "max": float(ch.max())} for ch in images],
        "_samples": samples,
    }


def raw_signature(cases: Sequence[Case]) -> str:
    """Hash of the training files' names, sizes and modification times."""
    h = hashlib.sha1()
    for case in cases:
        for f in [*case.images, case.label, case.label_json]:
            if f is not None and Path(f).exists():
                st = os.stat(f)
                h.update(f"{Path(f).name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _intensity_summary(samples: np.ndarray, name: str, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {"modality": index, "name": name, "num_samples": int(samples.size)}
    if samples.size == 0:
        return out
    values = np.percentile(samples, PERCENTILES)
    out.update({f"p{p:g}": float(v) for p, v in zip(PERCENTILES, values)})
    out.update({"mean": float(samples.mean()), "std": float(samples.std()), "min": float(samples.min()),
                "max": float(samples.max())})
    return out


def compute_fingerprint(task_dir: str | os.PathLike, workers: int = 0) -> dict[str, Any]:
    """Fingerprint of a task's training cases (see the module docstring); raises if a case fails."""
    task_dir = Path(task_dir)
    info = load_dataset_info(task_dir)
    cases = list_cases(task_dir, "train")
    per_case = int(min(10_000, max(100, MAX_SAMPLES_PER_MODALITY // max(len(cases), 1))))
    body_channel = ct_channel(info.modalities)
    results: dict[str, dict[str, Any]] = {}
    failures = []
    for case, res, err in run_parallel(_fingerprint_item, [(c, per_case, body_channel) for c in cases], workers,
                                      "fingerprint"):
        if err is not None:
            failures.append(f"{case[0].name}: {err}")
        else:
            results[case[0].name] = res
    if failures:
        raise RuntimeError("fingerprint failed for " + "; ".join(failures))
    ordered = [results[c.name] for c in cases]
    samples = [np.concatenate([r.pop("_samples")[m] for r in ordered]) if ordered else np.zeros(0)
               for m in range(info.num_modalities)]
    per_class = {str(k): 0 for k in range(info.num_classes)}
    for r in ordered:
        for o in r["objects"]:
            per_class[str(o["class"])] = per_class.get(str(o["class"]), 0) + 1
    counts = [r["num_objects"] for r in ordered]
    return {
        "version": FINGERPRINT_VERSION, "task": task_dir.name, "dim": info.dim,
        "modalities": {str(k): v for k, v in info.modalities.items()}, "num_classes": info.num_classes,
        "body_channel": body_channel,
        "class_names": info.class_names, "num_cases": len(ordered), "signature": raw_signature(cases),
        "intensity": [_intensity_summary(s, info.modalities[m], m) for m, s in enumerate(samples)],
        "objects_per_class": per_class,
        "objects_per_case": {"min": int(min(counts, default=0)), "median": float(np.median(counts) if counts else 0),
                             "max": int(max(counts, default=0)), "total": int(sum(counts))},
        "empty_cases": [r["case"] for r in ordered if r["num_objects"] == 0],
        "cases": ordered,
    }


SPACING_OUTLIER = 8.0  # a case whose spacing differs this much from the median on an axis is suspicious


def fingerprint_warnings(fp: dict[str, Any]) -> list[str]:
    """Doubts about a dataset that do not stop planning: no objects at all, spacing outliers.

    A spacing far from the others usually is a broken header (mm given as m, a slice thickness of 0.001):
    resampled to the common spacing such a case collapses to a few voxels or swells to thousands of slices.
    """
    warnings = []
    if fp.get("objects_per_case", {}).get("total", 0) == 0:
        warnings.append(f"{fp.get('task', 'dataset')}: no training case holds an object; a detector needs labelled "
                        "objects (check labelsTr and the instance jsons)")
    cases = [c for c in fp.get("cases", []) if c.get("spacing")]
    if len(cases) >= 3:
        spacings = np.array([c["spacing"] for c in cases], dtype=np.float64)
        median = np.median(spacings, axis=0)
        ratio = spacings / np.maximum(median, 1e-12)
        odd = np.flatnonzero(((ratio > SPACING_OUTLIER) | (ratio < 1 / SPACING_OUTLIER)).any(axis=1))
        for i in odd[:10]:
            shape = np.maximum(np.round(np.asarray(cases[i]["shape"]) * ratio[i]), 1).astype(int).tolist()
            warnings.append(f"{cases[i]['case']}: spacing {cases[i]['spacing']} mm is far from the median "
                            f"{median.round(4).tolist()} mm (at the median spacing it becomes {shape} voxels); "
                            "check its header")
        if len(odd) > 10:
            warnings.append(f"... and {len(odd) - 10} more case(s) with outlying spacing")
    return warnings


def _fingerprint_item(item: tuple[Case, int, int | None]) -> dict[str, Any]:
    return fingerprint_case(*item)


def load_or_compute_fingerprint(task_dir: str | os.PathLike, workers: int = 0, force: bool = False
                                ) -> tuple[dict[str, Any], bool]:
    """The task's fingerprint, recomputed only when the raw training files changed (or ``force``).

    Returns (fingerprint, written): ``written`` is False when the file on disk was reused.
    """
    paths = TaskPaths(Path(task_dir))
    if not force and paths.fingerprint.exists():
        try:
            old = read_json(paths.fingerprint)
            if (old.get("version") == FINGERPRINT_VERSION
                    and old.get("signature") == raw_signature(list_cases(paths.root, "train"))):
                logger.info(f"fingerprint unchanged, reusing {paths.fingerprint}")
                return old, False
        except Exception as err:  # noqa: BLE001 - a broken file is recomputed
            logger.warning(f"{paths.fingerprint}: unreadable ({err}); recomputing")
    fp = compute_fingerprint(paths.root, workers=workers)
    write_json(fp, paths.fingerprint)
    logger.info(f"wrote {paths.fingerprint} ({fp['num_cases']} cases, {fp['objects_per_case']['total']} objects)")
    return fp, True
