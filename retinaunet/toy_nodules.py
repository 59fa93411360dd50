"""A CT-scale lung nodule task: cropped chest-like volumes at clinical spacing with nodules of 3-30 mm.

Each volume is a region of a chest CT (default 60 x 90 x 90 mm at 1.25 x 0.7 x 0.7 mm, or 2.5 mm slices):
lung parenchyma (about -850 HU) bounded on one side by a chest wall of soft tissue, fat and ribs, crossed
by branching vessels (bright tubes that look like solid nodules slice by slice) and airways (air lumen with
a thin wall). Nodules are ellipsoids whose diameter is log-uniform in 3-30 mm, as in LIDC, of three classes:

- 0 ``solid``: soft-tissue density;
- 1 ``part_solid``: a ground-glass body (about -550 HU) with an off-centre solid core;
- 2 ``calcified``: a dense (bone-like) core in a soft-tissue body.

A quarter of the nodules lie against the chest wall (juxtapleural); their label is the part inside the
lung. The image is smoothed (partial volume) and carries Gaussian noise. Every volume comes from its own
seed ``(seed, split, index)``, so the files do not depend on the order of generation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from retinaunet.io import Geometry
from retinaunet.layout import task_name
from retinaunet.toy import _rng, write_task_folder

__all__ = ["NoduleConfig", "make_nodule_case", "write_nodule_task", "NODULE_CLASSES", "NODULE_NUMBERS"]

NODULE_CLASSES = {"0": "solid", "1": "part_solid", "2": "calcified"}
NODULE_NUMBERS = {1.25: 110, 2.5: 111}  # default task number per slice thickness
_LUNG, _SOFT, _FAT, _BONE, _AIR = -850.0, 40.0, -100.0, 700.0, -1000.0


@dataclass
class NoduleConfig:
    """Options of the nodule task (extent in mm, array order z, y, x)."""

    extent_mm: tuple[float, float, float] = (60.0, 90.0, 90.0)
    spacing: tuple[float, float, float] = (1.25, 0.7, 0.7)
    origin: tuple[float, float, float] = (-45.0, -160.0, -200.0)
    diameter_mm: tuple[float, float] = (3.0, 30.0)
    nodules_per_case: tuple[int, int] = (1, 3)
    juxtapleural_fraction: float = 0.25
    vessels: tuple[int, int] = (8, 14)
    airways: tuple[int, int] = (1, 3)
    noise_hu: float = 30.0
    num_train: int = 32
    num_test: int = 24
    seed: int = 0


class _Canvas:
    """An HU volume with voxel centres in mm; shapes are painted into it."""

    def __init__(self, shape: tuple[int, ...], spacing: np.ndarray) -> None:
        self.shape, self.spacing = shape, spacing
        self.image = np.full(shape, _LUNG, dtype=np.float32)
        self.axes = [(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)]

    def window(self, centre: np.ndarray, half: np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]]:
        """Index window around ``centre +- half`` (mm) and the mm coordinates of its voxels (broadcastable)."""
        lo = np.maximum(0, np.floor((centre - half) / self.spacing).astype(int))
        hi = np.minimum(self.shape, np.ceil((centre + half) / self.spacing).astype(int) + 1)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        grids = np.ix_(*[ax[s] for ax, s in zip(self.axes, sl)])
        return sl, [g - c for g, c in zip(grids, centre)]

    def ellipsoid(self, centre: np.ndarray, radii: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
        """Window and mask of the voxels whose centre lies inside an axis-aligned ellipsoid (mm)."""
        sl, d = self.window(centre, radii + self.spacing)
        inside = sum((g / r) ** 2 for g, r in zip(d, radii)) <= 1.0
        return sl, inside


def _tube(canvas: _Canvas, rng: np.random.Generator, start: np.ndarray, radius: float, length: float,
          value: float, wall: tuple[float, float] | None, lung: np.ndarray, branches: int = 2) -> None:
    """A smooth random tube (vessel, or airway when ``wall`` = (thickness, HU)) painted where the lung is."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    pos, r = start.astype(float), radius
    step = 0.6 * min(canvas.spacing.min() * 2, radius)
    for _ in range(int(length / step)):
        outer = r + (wall[0] if wall else 0.0)
        sl, d = canvas.window(pos, np.full(3, outer))
        dist2 = sum(g ** 2 for g in d)
        region = canvas.image[sl]
        in_lung = lung[sl]
        if wall:
            ring = (dist2 <= outer ** 2) & (dist2 > r ** 2) & in_lung & (region < wall[1])
            region[ring] = wall[1]
        region[(dist2 <= r ** 2) & in_lung] = value
        direction += rng.normal(scale=0.15, size=3)
        direction /= np.linalg.norm(direction)
        pos = pos + step * direction
        r = max(0.5, r * (1 - 0.5 * step / length))
        if branches and rng.random() < step / length * branches:
            _tube(canvas, rng, pos, r * 0.7, length * 0.5, value, wall, lung, branches - 1)
        if np.any(pos < 0) or np.any(pos > np.asarray(canvas.shape) * canvas.spacing):
            break


def make_nodule_case(cfg: NoduleConfig, split: str, index: int
                     ) -> tuple[np.ndarray, np.ndarray, dict[int, int], Geometry]:
    """One volume: ``float32[Z, Y, X]`` in HU, ``int16`` instance map, ``{id: class}``, geometry."""
    rng = _rng(cfg.seed, split, index)
    spacing = np.asarray(cfg.spacing, dtype=float)
    extent = np.asarray(cfg.extent_mm, dtype=float)
    shape = tuple(int(round(e / s)) for e, s in zip(extent, spacing))
    canvas = _Canvas(shape, spacing)
    z, y, x = np.ix_(*canvas.axes)
    # chest wall along one x side, curved in y and z; ribs as dense bands inside it
    side = int(rng.integers(0, 2))
    depth = rng.uniform(8.0, 16.0) + 6.0 * ((y - extent[1] / 2) / extent[1]) ** 2 + 3.0 * np.sin(z / 25.0)
    dist_in = (x if side == 0 else extent[2] - x) - depth  # mm from the pleura into the lung (<0: wall)
    wall = dist_in < 0
    canvas.image[wall] = _SOFT
    canvas.image[wall & (dist_in < -0.55 * depth)] = _FAT
    for zc in np.arange(rng.uniform(0, 20), extent[0], rng.uniform(18, 26)):
        rib = (((z - zc) / 4.0) ** 2 + ((dist_in + 0.4 * depth) / 3.0) ** 2) <= 1.0
        canvas.image[rib & wall] = _BONE
    lung = ~wall
    for _ in range(int(rng.integers(cfg.airways[0], cfg.airways[1] + 1))):
        _tube(canvas, rng, rng.uniform(0, extent), rng.uniform(2.0, 5.0), rng.uniform(40, 90), _AIR,
              (rng.uniform(0.8, 1.5), -50.0), lung, branches=1)
    for _ in range(int(rng.integers(cfg.vessels[0], cfg.vessels[1] + 1))):
        _tube(canvas, rng, rng.uniform(0, extent), rng.uniform(1.0, 3.5), rng.uniform(40, 120),
              rng.uniform(20.0, 60.0), None, lung, branches=2)
    # nodules
    inst = np.zeros(shape, dtype=np.int16)
    instances: dict[int, int] = {}
    placed: list[tuple[np.ndarray, float]] = []
    lo_d, hi_d = np.log(cfg.diameter_mm[0]), np.log(cfg.diameter_mm[1])
    for _ in range(int(rng.integers(cfg.nodules_per_case[0], cfg.nodules_per_case[1] + 1))):
        d = float(np.exp(rng.uniform(lo_d, hi_d)))
        radii = d / 2 * rng.uniform(0.88, 1.12, size=3)
        radii[1:] *= d / 2 / np.sqrt(radii[1] * radii[2])  # the axial diameter is d
        centre = _nodule_centre(rng, cfg, extent, radii, side, depth, placed)
        if centre is None:
            continue
        sl, body = canvas.ellipsoid(centre, radii)
        body &= lung[sl]
        if body.sum() < 2:
            continue
        cls = int(rng.integers(0, 3))
        region = canvas.image[sl]
        if cls == 1:
            region[body] = rng.uniform(-650.0, -450.0)
            core_r = radii * rng.uniform(0.3, 0.55)
            shift = (radii - core_r) * rng.uniform(-0.5, 0.5, size=3)
            core_sl, core = canvas.ellipsoid(centre + shift, core_r)
            core = _fit(core, sl, core_sl) & body
            region[core] = rng.uniform(0.0, 50.0)
        else:
            region[body] = rng.uniform(0.0, 50.0)
            if cls == 2:
                core_r = radii * rng.uniform(0.5, 0.9)
                core_sl, core = canvas.ellipsoid(centre, core_r)
                core = _fit(core, sl, core_sl) & body
                region[core if core.any() else body] = rng.uniform(350.0, 800.0)
        label = len(instances) + 1
        inst[sl][body] = label
        instances[label] = cls
        placed.append((centre, float(radii.max())))
    image = ndimage.gaussian_filter(canvas.image, sigma=0.6 / spacing * spacing.min())
    image += rng.normal(0.0, cfg.noise_hu, size=shape).astype(np.float32)
    geom = Geometry(spacing=tuple(float(s) for s in spacing), origin=tuple(cfg.origin),
                    direction=tuple(np.eye(3).ravel().tolist()), shape=shape)
    return image.astype(np.float32), inst, instances, geom


def _fit(mask: np.ndarray, outer: tuple[slice, ...], inner: tuple[slice, ...]) -> np.ndarray:
    """``mask`` (on window ``inner``) placed on the larger window ``outer``."""
    out_shape = tuple(s.stop - s.start for s in outer)
    full = np.zeros(out_shape, dtype=bool)
    idx = tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))
    full[idx] = mask
    return full


def _nodule_centre(rng: np.random.Generator, cfg: NoduleConfig, extent: np.ndarray, radii: np.ndarray,
                   side: int, depth: np.ndarray, placed: list[tuple[np.ndarray, float]]) -> np.ndarray | None:
    """A centre inside the crop, in the lung (or against the pleura), apart from earlier nodules."""
    r = float(radii.max())
    for _ in range(100):
        if np.any(extent - 2 * radii - 2.0 <= 0):
            return None
        c = rng.uniform(radii + 1.0, extent - radii - 1.0)
        iz = min(int(c[0] / cfg.spacing[0]), depth.shape[0] - 1)
        iy = min(int(c[1] / cfg.spacing[1]), depth.shape[1] - 1)
        wall_depth = float(depth[iz, iy, 0])
        if rng.random() < cfg.juxtapleural_fraction:
            dist_in = wall_depth + radii[2] * rng.uniform(0.6, 0.9)
        else:
            dist_in = rng.uniform(wall_depth + radii[2] + 2.0, extent[2] - radii[2] - 1.0) \
                if extent[2] - radii[2] - 1.0 > wall_depth + radii[2] + 2.0 else None
        if dist_in is None:
            continue
        c[2] = dist_in if side == 0 else extent[2] - dist_in
        if all(np.linalg.norm(c - o) > r + ro + 2.0 for o, ro in placed):
            return c
    return None


def write_nodule_task(root: str | os.PathLike, cfg: NoduleConfig | None = None, number: int | None = None,
                      name: str | None = None, force: bool = False, progress: bool = True) -> Path:
    """Write the nodule task in the standard raw layout under ``root`` and return its folder."""
    cfg = cfg or NoduleConfig()
    thick = cfg.spacing[0] >= 2.0
    number = number if number is not None else NODULE_NUMBERS[2.5 if thick else 1.25]
    name = name or ("ToyNodulesThick" if thick else "ToyNodules")
    return write_task_folder(Path(root) / task_name(number, name), force, 3, dict(NODULE_CLASSES), {"0": "CT"},
                             {"train": cfg.num_train, "test": cfg.num_test},
                             lambda split: lambda i: make_nodule_case(cfg, split, i), progress)
