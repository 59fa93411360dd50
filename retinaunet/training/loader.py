"""Patch sampling from preprocessed cases and the infinite training loader.

A share of the patches (``plans.training.foreground_fraction``) is centred near an object: a class is drawn
uniformly among the classes present (so rare classes are seen as often as common ones), then an object of
that class (uniformly, or favouring small ones with ``plans.training.small_object_bias``), and the centre is
jittered so objects do not always sit in the middle. The rest are random.
2d and 2dc plans on 3D data sample slices the same way (2dc stacks ``context_slices`` slices on each side as
channels, modality-major: channel ``m * (2k + 1) + (dz + k)``, zero beyond the volume).

Regions are read from memory-mapped arrays (``np.load(mmap_mode="r")``), never whole volumes, and padded
with zeros where they leave the image. Augmentation runs in batchgenerators' MultiThreadedAugmenter when
``num_workers > 0``; a dead or stuck worker stops training with a RuntimeError instead of a hang.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import Compose
from loguru import logger
from threadpoolctl import threadpool_limits

from retinaunet.boxes import boxes_from_instance_map
from retinaunet.plans import Plans
from retinaunet.store import case_files, context_channels, context_region, load_case, load_seg, read_region
from retinaunet.threads import fair_threads
from retinaunet.training.augmentation import AugmentationParams, build_transforms, default_augmentation, sample_size
from retinaunet.training.batch import TargetsTransform, TrainBatch, to_train_batch

JITTER = 0.25  # foreground centres move up to this share of the patch size from the object's centre


@dataclass(frozen=True)
class CaseInfo:
    """What the sampler needs of one preprocessed case. shape: spatial, boxes in data index coords."""

    name: str
    data_file: Path
    seg_file: Path
    shape: tuple[int, ...]
    channels: int
    classes: dict[int, int]
    boxes: dict[int, np.ndarray]


def read_case_info(folder: str | os.PathLike, name: str) -> CaseInfo:
    """Header, instance classes and boxes of ``<folder>/<name>``; reads no image data."""
    files = case_files(folder, name)
    for f in (files.data, files.seg, files.props):
        if not f.exists():
            raise FileNotFoundError(f"{f} not found: run rud_preprocess for this plan")
    data, meta = load_case(folder, name)
    classes = {int(k): int(v) for k, v in meta.get("instances", {}).items()}
    if "boxes" in meta:
        boxes = {int(k): np.asarray(v, dtype=float) for k, v in meta["boxes"].items()}
    else:
        boxes = {k: v.astype(float) for k, v in boxes_from_instance_map(load_seg(folder, name)).items()}
    boxes = {k: v for k, v in boxes.items() if k in classes}
    return CaseInfo(name, files.data, files.seg, tuple(data.shape[1:]), int(data.shape[0]), classes, boxes)


@dataclass(frozen=True)
class PatchChoice:
    """A sampled patch: case index, centre in data index coords (slice index first for slice plans),
    and the class it was centred on (None for a random patch)."""

    case: int
    centre: np.ndarray
    cls: int | None


class PatchSampler:
    """Chooses patch centres and reads regions around them.

    patch_size: network patch (2 or 3 values); region_size: what is read around the centre (>= patch, larger
    when augmentation rotates or zooms); context: slices on each side for 2dc (0 otherwise); small_object_bias:
    an object of the drawn class is picked with probability proportional to (geometric mean of its box extent
    in voxels) ** -small_object_bias (0: uniformly).
    """

    def __init__(self, cases: Sequence[CaseInfo], patch_size: Sequence[int], region_size: Sequence[int],
                 context: int = 0, small_object_bias: float = 0.0) -> None:
        if not cases:
            raise ValueError("no training cases to sample patches from")
        self.cases = list(cases)
        self.patch_size = np.asarray(patch_size, dtype=float)
        self.region_size = [int(r) for r in region_size]
        self.context = int(context)
        self.data_dim = len(self.cases[0].shape)
        self.slices = self.data_dim == len(patch_size) + 1  # 2d/2dc on 3D data
        if not self.slices and self.data_dim != len(patch_size):
            raise ValueError(f"patch size {list(patch_size)} does not fit {self.data_dim}D data")
        self.objects: dict[int, list[tuple[int, int]]] = {}
        for ci, case in enumerate(self.cases):
            for inst in sorted(case.boxes):
                self.objects.setdefault(case.classes[inst], []).append((ci, inst))
        self.classes = sorted(self.objects)
        self.weights: dict[int, np.ndarray] = {}  # per class, when small objects are favoured
        if small_object_bias:
            for cls, objs in self.objects.items():
                extents = [np.maximum(self.cases[ci].boxes[inst][self.data_dim:] - self.cases[ci].boxes[inst][
                    : self.data_dim], 1.0) for ci, inst in objs]
                w = np.array([np.exp(np.log(e).mean()) for e in extents]) ** -float(small_object_bias)
                self.weights[cls] = w / w.sum()

    def choose(self, rng: np.random.Generator, foreground: bool) -> PatchChoice:
        """A centre near an object of a class drawn uniformly (foreground), or anywhere (random)."""
        if foreground and self.classes:
            cls = self.classes[rng.integers(len(self.classes))]
            pick = rng.choice(len(self.objects[cls]), p=self.weights[cls]) if self.weights else \
                rng.integers(len(self.objects[cls]))
            ci, inst = self.objects[cls][pick]
            box = self.cases[ci].boxes[inst]
            lo, hi = box[: self.data_dim], box[self.data_dim:]
            centre = (lo + hi) / 2
            net_axes = slice(1, None) if self.slices else slice(None)
            centre[net_axes] += rng.uniform(-JITTER, JITTER, len(self.patch_size)) * self.patch_size
            if self.slices:
                centre[0] = rng.integers(int(lo[0]), max(int(hi[0]), int(lo[0]) + 1))
            return PatchChoice(ci, centre, cls)
        ci = int(rng.integers(len(self.cases)))
        shape = np.asarray(self.cases[ci].shape, dtype=float)
        centre = np.empty(self.data_dim)
        net_shape = shape[1:] if self.slices else shape
        low = np.minimum(self.patch_size / 2, net_shape / 2)
        high = np.maximum(net_shape - self.patch_size / 2, net_shape / 2)
        net_centre = rng.uniform(low, high)
        if self.slices:
            centre[0] = rng.integers(int(shape[0]))
            centre[1:] = net_centre
        else:
            centre[:] = net_centre
        return PatchChoice(ci, centre, None)

    def origin(self, choice: PatchChoice) -> list[int]:
        """Lowest corner of the region in data index coords (slice plans: [slice, y0, x0])."""
        if self.slices:
            return [int(choice.centre[0])] + [int(round(c - r / 2)) for c, r in
                                              zip(choice.centre[1:], self.region_size)]
        return [int(round(c - r / 2)) for c, r in zip(choice.centre, self.region_size)]

    def read(self, choice: PatchChoice) -> tuple[np.ndarray, np.ndarray]:
        """Region around a choice: (data ndarray[C', *R] float32, instance ids ndarray[*R] int32)."""
        case = self.cases[choice.case]
        data = np.load(case.data_file, mmap_mode="r")
        seg = np.load(case.seg_file, mmap_mode="r")
        lo = self.origin(choice)
        if self.slices:
            image = context_region(data, lo, self.region_size, self.context)
            inst = read_region(seg, lo, [1, *self.region_size])[0]
        else:
            image = read_region(data, lo, self.region_size)
            inst = read_region(seg, lo, self.region_size)
        return image.astype(np.float32, copy=False), inst.astype(np.int32, copy=False)


class PatchLoader(SlimDataLoaderBase):
    """batchgenerators data loader: batches {"data": [B, C, *R], "seg": [B, 1, *R] instance ids, "classes":
    [{id: class}], "cases": [name], "foreground": [bool], "origins": [region corner]}. Each worker reseeds
    from (seed, worker id)."""

    def __init__(self, sampler: PatchSampler, batch_size: int, foreground_fraction: float, seed: int = 0) -> None:
        super().__init__(sampler, batch_size, None)
        self.sampler = sampler
        self.foreground_fraction = float(foreground_fraction)
        self.seed = int(seed)
        self.rng = np.random.default_rng([self.seed, 0])

    def set_thread_id(self, thread_id: int) -> None:
        """Called in each worker process: reseed sampling, and Python's RNG (batchgenerators' noise uses it)."""
        super().set_thread_id(thread_id)
        self.rng = np.random.default_rng([self.seed, int(thread_id)])
        random.seed(int(np.random.SeedSequence([self.seed, 2, int(thread_id)]).generate_state(1)[0]))

    def generate_train_batch(self) -> dict[str, Any]:
        # stochastic rounding: exactly the fraction in expectation, and exact whenever fraction * B is whole
        n_fg = int(np.floor(self.foreground_fraction * self.batch_size + self.rng.random()))
        fg = [i < n_fg for i in range(self.batch_size)]
        images, insts, classes, cases, origins = [], [], [], [], []
        for is_fg in fg:
            choice = self.sampler.choose(self.rng, is_fg)
            image, inst = self.sampler.read(choice)
            case = self.sampler.cases[choice.case]
            images.append(image)
            insts.append(inst[None])
            classes.append(case.classes)
            cases.append(case.name)
            origins.append(self.sampler.origin(choice))
        return {"data": np.stack(images), "seg": np.stack(insts), "classes": classes, "cases": cases,
                "foreground": fg, "origins": origins}


class TrainLoader:
    """Infinite iterator of :class:`TrainBatch`. Use as a context manager or call :meth:`close`."""

    def __init__(self, loader: PatchLoader, transform: Compose, num_workers: int, seed: int,
                 timeout: float = 300.0) -> None:
        self.loader, self.transform = loader, transform
        self.num_workers, self.timeout = int(num_workers), float(timeout)
        self._timed_out = False
        self._augmenter: MultiThreadedAugmenter | None = None
        if self.num_workers > 0:
            seeds = [int(np.random.SeedSequence([seed, 1, i]).generate_state(1)[0]) for i in range(num_workers)]
            self._augmenter = MultiThreadedAugmenter(loader, transform, self.num_workers, num_cached_per_queue=2,
                                                     seeds=seeds)
        else:
            # batchgenerators draws from numpy's and Python's global RNGs: keep private states, swap them in
            state = np.random.SeedSequence([seed, 1]).generate_state(2)
            self._rng_state = np.random.RandomState(state[0]).get_state()
            self._py_state = random.Random(int(state[1])).getstate()

    def __iter__(self) -> TrainLoader:
        return self

    def __next__(self) -> TrainBatch:
        if self._augmenter is None:
            batch = next(self.loader)
            outer, outer_py = np.random.get_state(), random.getstate()
            np.random.set_state(self._rng_state)
            random.setstate(self._py_state)
            try:
                # as in the workers: batchgenerators' small matrix products are slower with BLAS threads
                with threadpool_limits(limits=1, user_api="blas"):
                    batch = self.transform(**batch)
            finally:
                self._rng_state, self._py_state = np.random.get_state(), random.getstate()
                np.random.set_state(outer)
                random.setstate(outer_py)
            return to_train_batch(batch)
        return to_train_batch(self._next_from_workers())

    def _next_from_workers(self) -> dict[str, Any]:
        augmenter = self._augmenter
        if augmenter is None:
            raise RuntimeError("the training loader is closed")
        timer = threading.Timer(self.timeout, self._abort_on_timeout)
        timer.daemon = True
        timer.start()
        try:
            return next(augmenter)
        except RuntimeError as err:
            self.close()
            if self._timed_out:
                raise RuntimeError(f"data loading workers produced no batch in {self.timeout:.0f} s; training "
                                   "stops (rerun with --workers 0 to debug in the main process)") from err
            raise RuntimeError("a data loading worker died (its error is printed above); training stops "
                               "(rerun with --workers 0 to see the error in the main process)") from err
        finally:
            timer.cancel()

    def _abort_on_timeout(self) -> None:
        self._timed_out = True
        augmenter = self._augmenter
        if augmenter is not None:
            for process in list(augmenter._processes):  # stuck workers would not notice the abort
                process.terminate()
            augmenter.abort_event.set()

    def close(self) -> None:
        """Stop the worker processes (no-op with 0 workers or when closed already)."""
        augmenter, self._augmenter = self._augmenter, None
        if augmenter is not None:
            augmenter._finish()

    def __enter__(self) -> TrainLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down multiprocessing
            pass


def resolve_workers(setting: int | None, device: str = "cpu") -> int:
    """Loader processes: ``setting`` when given, else chosen for this machine (plans travel between machines)
    from its free cores (:func:`retinaunet.threads.fair_threads`, so other work keeps its share): on a GPU up
    to 8, leaving a core for the training process; on a CPU at most 2, leaving 2 cores to it."""
    if setting is not None:
        return int(setting)
    cpus = fair_threads()
    return min(8, cpus - 1) if str(device).startswith("cuda") else max(0, min(2, cpus - 2))


def make_train_loader(preprocessed_dir: str | os.PathLike, case_names: Sequence[str], plans: Plans,
                      num_workers: int | None = None, seed: int = 0, augment: bool = True, *,
                      batch_size: int | None = None, augmentation: AugmentationParams | None = None,
                      timeout: float = 300.0) -> TrainLoader:
    """Infinite loader of augmented training patches for ``plans`` (patch size, batch size, foreground share).

    num_workers: background processes (``plans.training.num_workers`` when None; 0 runs in this process and
    is deterministic for a seed). seed: give each DDP rank its own. augmentation: overrides
    :func:`default_augmentation` (ignored when ``augment`` is False). timeout: seconds without a batch after
    which the workers count as stuck.
    """
    workers = resolve_workers(plans.training.num_workers if num_workers is None else num_workers)
    cases = [read_case_info(preprocessed_dir, name) for name in case_names]
    params = (augmentation or default_augmentation(plans)) if augment else None
    patch = plans.patch_size
    context = plans.context_slices if plans.mode == "2dc" else 0
    sampler = PatchSampler(cases, patch, sample_size(patch, params), context=context,
                           small_object_bias=plans.training.small_object_bias)
    channels = context_channels(cases[0].channels, context)
    if channels != plans.in_channels:
        raise ValueError(f"{cases[0].data_file} gives {channels} input channels but the plans expect "
                         f"{plans.in_channels}: rerun rud_preprocess for this plan")
    loader = PatchLoader(sampler, batch_size or plans.batch_size, plans.training.foreground_fraction, seed=seed)
    transform = Compose([*build_transforms(patch, params), TargetsTransform()])
    logger.debug(f"training loader: {len(cases)} cases, {len(sampler.classes)} classes with objects, patch {patch}, "
                 f"region {sampler.region_size}, {workers} workers")
    return TrainLoader(loader, transform, workers, seed, timeout=timeout)
