"""Raw predictions: every view's boxes of a case before consolidation, and their consolidation.

The :class:`~retinaunet.inference.predictor.Predictor` gathers the boxes of all views (ensemble member x mirroring x
tile) of an image and consolidates them with :func:`consolidate_raw`. Kept as a :class:`RawPrediction`
(an ``.npz`` per case in a fold's ``val_raw/``), the same boxes can be consolidated again with other
settings (WBC or NMS and its IoU, fewer checkpoints, mirroring off) without running the network: this is
what ``rud_sweep`` searches over.

A view of a member and a mirroring is identified by ``member * num_mirrors + mirror`` (mirror 0 is the
identity); with the tile index it is one view for WBC. The number of views WBC expects at a box is
(members used) x (mirrorings used) x (mean number of tiles covering the box), so any subset of members
and mirrorings is consolidated exactly as a prediction with only those would be.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from retinaunet.inference.merge import merge_2d_to_3d
from retinaunet.inference.wbc import consolidate

from retinaunet.io import atomic_path
from retinaunet.plans import InferencePlan

__all__ = ["RawPrediction", "consolidate_raw", "load_raw", "save_raw"]

_TILE_STRIDE = 1 << 20  # view ids: (member * num_mirrors + mirror) * _TILE_STRIDE + tile


@dataclass
class RawPrediction:
    """Unconsolidated boxes of one case, in preprocessed index coordinates of the network's images.

    boxes: float[N, 2*dim] (``dim`` of the network; slice coordinates when a 2D network predicts 3D data),
    scores: float[N], labels: int64[N], member / mirror / tile: int[N] (which view), item: int[N] (the
    slice of slice-wise prediction, -1 for whole images), pcf: float[N] patch-centre factors,
    coverage: float[N] mean number of tiles covering the box; member_rank: int[M] each member's rank
    among its fold's kept checkpoints (0 the best), num_mirrors: mirrorings per member; slicewise: 2D
    boxes of 3D data to merge after consolidation.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    member: np.ndarray
    mirror: np.ndarray
    tile: np.ndarray
    item: np.ndarray
    pcf: np.ndarray
    coverage: np.ndarray
    member_rank: np.ndarray
    num_mirrors: int
    slicewise: bool = False

    @classmethod
    def concat(cls, parts: list[RawPrediction], dim: int, member_rank: np.ndarray, num_mirrors: int,
               slicewise: bool) -> RawPrediction:
        """One raw prediction of the parts (e.g. the slices of a case)."""
        arrays = {}
        for f in fields(cls)[:9]:
            values = [getattr(p, f.name) for p in parts]
            arrays[f.name] = np.concatenate(values) if values else (
                np.zeros((0, 2 * dim)) if f.name == "boxes" else np.zeros(0))
        return cls(**arrays, member_rank=np.asarray(member_rank, dtype=np.int64), num_mirrors=int(num_mirrors),
                   slicewise=bool(slicewise))

    @property
    def num_members(self) -> int:
        return len(self.member_rank)

    def select(self, checkpoints: int | None = None, mirror: bool = True) -> tuple[np.ndarray, int]:
        """Indices of the boxes of the first ``checkpoints`` members per fold (None: all), with or without
        the mirrored views; and the number of views per tile they hold."""
        ranks = self.member_rank
        members = np.flatnonzero(ranks < (checkpoints if checkpoints is not None else ranks.max(initial=0) + 1))
        keep = np.isin(self.member, members)
        if not mirror:
            keep &= self.mirror == 0
        return np.flatnonzero(keep), len(members) * (self.num_mirrors if mirror else 1)


def consolidate_raw(raw: RawPrediction, settings: InferencePlan, min_score: float = 0.01
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consolidated (boxes, scores, labels) of a raw prediction with ``settings``' checkpoints, mirror,
    consolidation and its IoU (and ``merge_iou`` for slice-wise 2D boxes of 3D data).

    ``min_score``: clusters scoring at most this are dropped (WBC's floor; the plans' ``min_score`` is a
    post-processing step after this).
    """
    index, num_views = raw.select(settings.checkpoints, settings.mirror)
    dim = raw.boxes.shape[1] // 2
    per_item = []
    items = raw.item[index]
    for item in np.unique(items):
        sel = index[items == item]
        views = (raw.member[sel].astype(np.int64) * raw.num_mirrors + raw.mirror[sel]) * _TILE_STRIDE + raw.tile[sel]
        out = consolidate(raw.boxes[sel], raw.scores[sel], raw.labels[sel], views, raw.pcf[sel],
                          num_views * raw.coverage[sel], method=settings.consolidation,
                          iou_threshold=settings.consolidation_iou, min_score=min_score)
        per_item.append((*out, int(item)))
    if not raw.slicewise:
        if not per_item:
            return np.zeros((0, 2 * dim)), np.zeros(0), np.zeros(0, dtype=np.int64)
        return per_item[0][:3]
    per_item = [p for p in per_item if len(p[0])]
    if not per_item:
        return np.zeros((0, 6)), np.zeros(0), np.zeros(0, dtype=np.int64)
    z = np.concatenate([np.full(len(b), s, dtype=np.int64) for b, _, _, s in per_item])
    return merge_2d_to_3d(np.concatenate([p[0] for p in per_item]), np.concatenate([p[1] for p in per_item]),
                          np.concatenate([p[2] for p in per_item]), z, iou_threshold=settings.merge_iou)


def save_raw(raw: RawPrediction, path: str | os.PathLike, **extra: np.ndarray) -> Path:
    """Write ``raw`` (and ``extra`` arrays, e.g. the ground truth) to an ``.npz``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f.name: np.asarray(getattr(raw, f.name)) for f in fields(RawPrediction)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays, **{f"extra_{k}": np.asarray(v) for k, v in extra.items()})
    return path


def load_raw(path: str | os.PathLike) -> tuple[RawPrediction, dict[str, np.ndarray]]:
    """A raw prediction and its extra arrays from :func:`save_raw`'s file."""
    with np.load(path) as data:
        values = {k: data[k] for k in data.files}
    raw = RawPrediction(**{f.name: values[f.name] for f in fields(RawPrediction)[:10]},
                        num_mirrors=int(values["num_mirrors"]), slicewise=bool(values["slicewise"]))
    extra = {k.removeprefix("extra_"): v for k, v in values.items() if k.startswith("extra_")}
    return raw, extra
