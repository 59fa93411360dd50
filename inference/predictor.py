"""Whole-case inference: tiles x mirror views x ensemble members, consolidated per class.

``Predictor.predict_case`` covers a preprocessed case with overlapping tiles (:mod:`retinaunet.inference.tiling`),
runs every ensemble member on every mirrored view of a batch of tiles, flips the boxes back, shifts
them by the tile position and consolidates all of them per class with weighted box clustering (or NMS)
from :mod:`retinaunet.inference.wbc`. Each (member, mirroring, tile) is one view for WBC; the expected number of
views at a box is members x mirrorings x the mean number of tiles covering the box.

For 2d and 2dc plans on 3D data the slices are predicted one by one (2dc: the slice +- context slices
as channels), consolidated per slice, and merged into 3D boxes by :mod:`retinaunet.inference.merge`.

The segmentation output is averaged over views on the device (in place) and summed tile by tile into one
``[num_classes + 1, *S]`` array on the CPU (float32, or float16 to halve it); only its argmax is kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from retinaunet.inference.raw import RawPrediction, consolidate_raw
from retinaunet.inference.tiling import TileGrid, extract_tile, tile_slices
from retinaunet.inference.wbc import patch_center_factor
from torch import Tensor, nn
from tqdm import tqdm

from retinaunet.models import Detector
from retinaunet.plans import Plans
from retinaunet.store import context_slice

__all__ = ["CasePrediction", "Predictor", "flip_boxes", "mirror_views"]


@dataclass
class CasePrediction:
    """Consolidated predictions of one case in preprocessed index coordinates.

    boxes: float[K, 2*data_dim]; scores: float[K]; labels: int64[K] (classes from 0);
    seg: uint8[*S] argmax of the averaged segmentation (0 background, c+1 class c) or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    seg: np.ndarray | None = None
    raw: RawPrediction | None = None  # every view's boxes before consolidation, when asked for

    @classmethod
    def empty(cls, dim: int) -> CasePrediction:
        return cls(np.zeros((0, 2 * dim)), np.zeros(0), np.zeros(0, dtype=np.int64))


def mirror_views(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` to flip, the identity first: 2**len(axes) views."""
    axes = sorted({int(a) for a in axes})
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def flip_boxes(boxes: Tensor, axes: Sequence[int], size: Sequence[int]) -> Tensor:
    """Boxes of a view flipped along spatial ``axes`` mapped back to the unflipped frame.

    boxes: Tensor[K, 2*dim] half-open, size: spatial size of the flipped image; [lo, hi) -> [n-hi, n-lo).
    """
    if not axes:
        return boxes
    out = boxes.clone()
    dim = boxes.shape[1] // 2
    for a in axes:
        out[:, a] = size[a] - boxes[:, a + dim]
        out[:, a + dim] = size[a] - boxes[:, a]
    return out


class Predictor:
    """Predicts whole preprocessed cases with an ensemble of detectors.

    Args:
        models: detectors with ``predict(images) -> Detections`` (see retinaunet.models); all are
            ensembled with equal weight.
        plans: the plans the models were trained with (patch_size, mode, context_slices, inference).
        device: where the networks run; accumulation happens on the CPU.
        mirror: test-time mirroring over all flips of ``mirror_axes`` (default ``inference.mirror``).
        consolidation: "wbc" (weighted box clustering, the paper's) or "nms" (default
            ``inference.consolidation``, with its IoU).
        member_rank: each model's rank among its fold's kept checkpoints (0 the best; default all 0),
            recorded in raw predictions so that a sweep can drop checkpoints.
        keep_raw: also return every view's boxes before consolidation (``CasePrediction.raw``).
        batch_size: tiles per forward pass (default plans.batch_size).
        tile_overlap: fraction of the patch that neighbouring tiles share (default plans.inference).
        keep_seg: also return the segmentation argmax (costs one float array of (classes+1) x case size,
            so off by default).
        seg_dtype: accumulator dtype, "float32" or "float16" (half the memory, same argmax in practice).
        progress: show a progress bar over the tiles of each case.
    """

    def __init__(self, models: Sequence[nn.Module], plans: Plans | dict, device: str | torch.device = "cpu",
                 mirror: bool | None = None, consolidation: str | None = None, *,
                 mirror_axes: Sequence[int] | None = None, batch_size: int | None = None,
                 tile_overlap: float | None = None, keep_seg: bool = False, seg_dtype: str = "float32",
                 progress: bool = False, member_rank: Sequence[int] | None = None, keep_raw: bool = False) -> None:
        if not models:
            raise ValueError("Predictor needs at least one model")
        self.plans = (plans if isinstance(plans, Plans) else Plans.from_dict(plans)).copy()
        if consolidation is not None:
            if consolidation not in ("wbc", "nms"):
                raise ValueError(f"consolidation must be 'wbc' or 'nms', got {consolidation!r}")
            self.plans.inference.consolidation = consolidation
        if mirror is not None:
            self.plans.inference.mirror = bool(mirror)
        self.plans.inference.checkpoints = None  # the caller chose the models
        self.device = torch.device(device)
        self.models = [m.to(self.device).eval() for m in models]
        inference = self.plans.inference
        axes = inference.mirror_axes if mirror_axes is None else mirror_axes
        if any(not 0 <= int(a) < self.plans.dim for a in axes):
            raise ValueError(f"mirror axes {list(axes)} must be spatial axes 0..{self.plans.dim - 1}")
        self.views = mirror_views(axes) if inference.mirror else [()]
        self.consolidation = inference.consolidation
        self.iou_threshold = inference.consolidation_iou
        self.member_rank = np.zeros(len(self.models), dtype=np.int64) if member_rank is None else np.asarray(
            member_rank, dtype=np.int64)
        if len(self.member_rank) != len(self.models):
            raise ValueError(f"member_rank has {len(self.member_rank)} entries for {len(self.models)} models")
        self.keep_raw = keep_raw
        self.batch_size = int(batch_size or self.plans.batch_size)
        self.tile_overlap = float(inference.tile_overlap if tile_overlap is None else tile_overlap)
        self.keep_seg = keep_seg
        self.seg_dtype = np.dtype(seg_dtype)
        self.progress = progress
        self.patch_size = tuple(self.plans.inference_patch_size)

    @property
    def num_views(self) -> int:
        """Views per tile: ensemble members x mirrorings."""
        return len(self.models) * len(self.views)

    # -- public -----------------------------------------------------------------------------------------
    def predict_case(self, data: np.ndarray, name: str | None = None) -> CasePrediction:
        """Predict one preprocessed case ``data: float32[C, *S]`` (may be a memory map)."""
        slicewise = self._check_input(data)
        item_shape = tuple(data.shape[2:] if slicewise else data.shape[1:])
        items: Sequence[int | None] = range(data.shape[1]) if slicewise else [None]
        grid = TileGrid(item_shape, self.patch_size, self.tile_overlap)
        starts = grid.starts
        acc = (np.zeros((self.plans.num_classes + 1, *data.shape[1:]), dtype=self.seg_dtype)
               if self.keep_seg else None)
        jobs = [(item, t) for item in items for t in range(len(starts))]
        per_item: list[RawPrediction] = []
        kept: list[RawPrediction] = []
        result: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        views: list[tuple] = []
        cache: tuple[int | None, np.ndarray] | None = None
        buffer = np.zeros((self.batch_size, self.plans.in_channels, *self.patch_size), dtype=np.float32)
        bar = tqdm(total=len(jobs), desc=name or "tiles", unit="tile", disable=not self.progress, leave=False)
        for b0 in range(0, len(jobs), self.batch_size):
            batch = jobs[b0: b0 + self.batch_size]
            for b, (item, t) in enumerate(batch):
                if cache is None or cache[0] != item:
                    cache = (item, self._item_image(data, item))
                extract_tile(cache[1], starts[t], self.patch_size, out=buffer[b])
            dets, seg = self._forward(torch.from_numpy(buffer[: len(batch)]).to(self.device))
            for b, (item, t) in enumerate(batch):
                boxes, scores, labels, view = dets[b]
                if len(boxes):  # a tile without boxes adds nothing to its image's gathered views
                    shift = np.concatenate([starts[t], starts[t]])
                    boxes = np.clip(boxes + shift, 0, np.concatenate([item_shape, item_shape]))
                    pcf = (patch_center_factor(boxes - shift, self.patch_size) if len(starts) > 1
                           else np.ones(len(boxes)))
                    views.append((boxes, scores, labels, view, np.full(len(boxes), t, np.int32), pcf))
                    if len(views) >= COMPACT_EVERY:
                        views = [_stack(views)]
                if acc is not None and seg is not None:
                    src, dst = tile_slices(starts[t], self.patch_size, item_shape)
                    lead = (slice(None),) if item is None else (slice(None), item)
                    acc[(*lead, *src)] += seg[b][(slice(None), *dst)].astype(self.seg_dtype, copy=False)
                if t == len(starts) - 1:  # last tile of this image: gather its views, free the lists
                    per_item.append(self._gather(views, grid, -1 if item is None else int(item)))
                    views = []
                    if not slicewise:
                        result = consolidate_raw(self._as_case(per_item, False), self.plans.inference)
                    if self.keep_raw:
                        kept.append(per_item[-1])
                    per_item = per_item if slicewise else []
            bar.update(len(batch))
        bar.close()
        if slicewise:
            result = consolidate_raw(self._as_case(per_item, True), self.plans.inference)
        boxes, scores, labels = result
        return CasePrediction(np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * (data.ndim - 1)),
                              np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64),
                              None if acc is None else _argmax(acc),
                              self._as_case(kept, slicewise) if self.keep_raw else None)

    # -- steps ------------------------------------------------------------------------------------------
    def _check_input(self, data: np.ndarray) -> bool:
        """Validate ``data`` against the plans; True when a 2D network predicts 3D data slice by slice."""
        dim, mode = self.plans.dim, self.plans.mode
        data_dim = data.ndim - 1
        if data_dim == dim and mode != "2dc":
            expected = self.plans.in_channels
            slicewise = False
        elif data_dim == 3 and dim == 2:
            slicewise = True
            expected = self.plans.in_channels // (2 * self.plans.context_slices + 1) if mode == "2dc" \
                else self.plans.in_channels
        else:
            raise ValueError(f"a {mode} plan cannot predict {data_dim}D data of shape {tuple(data.shape)}")
        if data.shape[0] != expected:
            raise ValueError(f"data has {data.shape[0]} channels, the {mode} plan expects {expected}")
        return slicewise

    def _item_image(self, data: np.ndarray, item: int | None) -> np.ndarray:
        """The network input image of one item: the whole case, a slice, or a slice with context."""
        if item is None:
            return data
        if self.plans.mode == "2dc":
            return context_slice(data, item, self.plans.context_slices)
        return np.asarray(data[:, item], dtype=np.float32)

    @torch.inference_mode()
    def _forward(self, x: Tensor) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray | None]:
        """All members x mirrorings of a batch ``x: [B, C, *P]``.

        Returns per image (boxes [K, 2d] patch coords, scores [K], labels [K], local view [K]) and the
        segmentation averaged over views ``float32[B, K+1, *P]`` (None when not kept or not produced).
        """
        per_image: list[list[list[Tensor]]] = [[[], [], [], []] for _ in range(x.shape[0])]
        seg_sum = None
        for m, model in enumerate(self.models):
            for v, axes in enumerate(self.views):
                dims = [a + 2 for a in axes]
                det = self._predict(model, torch.flip(x, dims) if axes else x)
                view = m * len(self.views) + v
                for b, lists in enumerate(per_image):
                    lists[0].append(flip_boxes(det.boxes[b].float(), axes, self.patch_size))
                    lists[1].append(det.scores[b].float())
                    lists[2].append(det.labels[b].long())
                    lists[3].append(torch.full_like(det.labels[b], view, dtype=torch.long))
                if self.keep_seg and det.seg is not None:
                    seg = torch.flip(det.seg, dims) if axes else det.seg
                    seg_sum = seg.float() if seg_sum is None else seg_sum.add_(seg)
        out = [tuple(torch.cat(part).cpu().numpy() for part in lists) for lists in per_image]
        seg_mean = None if seg_sum is None else seg_sum.div_(self.num_views).cpu().numpy()
        return out, seg_mean

    def _predict(self, model: nn.Module, x: Tensor):
        """One model on one view; a detector of the registry skips its segmentation output when it is not
        kept (the same boxes: P0 and the segmentation head feed no detection head)."""
        if isinstance(model, Detector):
            return model.predict(x, segmentation=self.keep_seg)
        return model.predict(x)

    def _gather(self, views: list[tuple], grid: TileGrid, item: int) -> RawPrediction:
        """The boxes of every view and tile of one image as a raw prediction (with coverage)."""
        dim = grid.dim
        boxes, scores, labels, view, tile, pcf = _stack(views) if views else (
            np.zeros((0, 2 * dim)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32),
            np.zeros(0))
        boxes = boxes.astype(np.float64).reshape(-1, 2 * dim)
        n_mirrors = len(self.views)
        return RawPrediction(
            boxes=boxes, scores=scores.astype(np.float64), labels=labels.astype(np.int64),
            member=(view // n_mirrors).astype(np.int16), mirror=(view % n_mirrors).astype(np.int16),
            tile=tile.astype(np.int32), item=np.full(len(boxes), item, dtype=np.int32),
            pcf=pcf.astype(np.float64), coverage=grid.mean_coverage(boxes), member_rank=self.member_rank,
            num_mirrors=n_mirrors)

    def _as_case(self, parts: list[RawPrediction], slicewise: bool) -> RawPrediction:
        dim = self.plans.dim
        return RawPrediction.concat(parts, dim, self.member_rank, len(self.views), slicewise)


COMPACT_EVERY = 256  # per-tile box arrays gathered into one set of arrays this often


def _stack(views: list[tuple]) -> tuple[np.ndarray, ...]:
    """Per-tile (boxes, scores, labels, view, tile, pcf) arrays concatenated field by field.

    Gathering them every few hundred tiles keeps thousands of small arrays from living between the
    network's large temporary buffers, which fragments the heap: on a 300 x 512 x 512 scan (6,048 tiles)
    the process grew by about 0.5 MB per pass, 1.5 GB in all, before this."""
    return tuple(np.concatenate([v[k] for v in views]) for k in range(6))


def _argmax(acc: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Channel argmax of ``acc: [K+1, *S]`` as uint8[*S], a slab of the first axis at a time."""
    out = np.empty(acc.shape[1:], dtype=np.uint8)
    for i in range(0, acc.shape[1], chunk):
        out[i: i + chunk] = np.argmax(acc[:, i: i + chunk], axis=0)
    return out
