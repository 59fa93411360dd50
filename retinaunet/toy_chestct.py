"""A full-size chest CT cohort in LUNA16's own format (``rud_example chestct``).

Writes what the LUNA16 download holds, so ``rud_convert luna16`` and ``rud_evaluate --luna`` run on it as on
the real data: ``subset0`` .. ``subsetK`` folders of ``<seriesuid>.mhd`` + ``.raw`` scans (int16 HU, dotted
seriesuids), ``annotations.csv`` (world centre and diameter of each nodule), ``annotations_excluded.csv``
(findings the challenge ignores: nodules under 3 mm, some without a diameter) and ``seriesuids.csv``.

Each scan is a whole chest at clinical geometry: by default 512 x 512 in-plane over a field of view of
340-400 mm (0.66-0.78 mm voxels), slices of 1-2.5 mm, 120-400 of them. In HU: air around the body, a body
of subcutaneous fat and muscle with ribs, spine and a heart, two lungs (about -850 HU) with branching vessel
trees and a trachea, nodules of 3-30 mm (log-uniform; solid, part-solid or calcified, a quarter against
the pleura), a curved table with foam under the patient, Gaussian noise, and the padding value (-2000 or
-3024) outside the scanner's circular field of view. A third of the scans are stored with a rotated or
flipped direction matrix; annotations are in world coordinates, so they stay true.

Generation is vectorised numpy over slabs of slices, one scan in memory at a time (its int16 array plus a
few float32 slabs). Smaller ``size`` / ``slices`` keep the physical field of view and scan length and make
the voxels coarser (for tests); nodules are then at least 1.2 voxels wide. Every scan comes from its own
seed ``(seed, index)``, so the files do not depend on the order of generation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retinaunet.progress import hidden
from retinaunet.toy import partial_folder

__all__ = ["ChestCTConfig", "ChestScan", "make_chest_scan", "scan_geometry", "write_chestct_cohort"]

_AIR, _LUNG, _FAT, _SOFT, _BONE, _FOAM, _PLATE = -1000.0, -850.0, -100.0, 40.0, 650.0, -900.0, 120.0
_UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
_SLAB = 16  # slices generated together
# direction matrices (row-major, as SimpleITK): identity, x and y flipped, 90 degrees about z
_DIRECTIONS = {"identity": (1, 0, 0, 0, 1, 0, 0, 0, 1), "flipped": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
               "rotated": (0, -1, 0, 1, 0, 0, 0, 0, 1)}


@dataclass
class ChestCTConfig:
    """Options of the cohort. ``size``: in-plane voxels; ``slices``: (min, max) slices per scan."""

    num_scans: int = 20
    subsets: int = 10
    size: int = 512
    slices: tuple[int, int] = (120, 400)
    fov_mm: tuple[float, float] = (340.0, 400.0)
    slice_thickness: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 2.5)
    diameter_mm: tuple[float, float] = (3.0, 30.0)
    nodules_per_scan: tuple[int, ...] = (0, 1, 1, 2, 2, 3, 4)
    rotated_fraction: float = 0.33
    seed: int = 0


@dataclass
class ChestScan:
    """One generated scan: int16 ``array`` (z, y, x as stored), its geometry, and its findings in world mm."""

    uid: str
    array: np.ndarray
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]
    nodules: list[tuple[tuple[float, float, float], float]]  # (world centre, diameter mm)
    excluded: list[tuple[tuple[float, float, float], float]]  # diameter -1 when not given
    padding: int


def _uid(rng: np.random.Generator) -> str:
    digits = "".join(str(d) for d in rng.integers(0, 10, size=30))
    return _UID_ROOT + str(int(rng.integers(1, 10))) + digits


class _Anatomy:
    """The random body of one scan in mm, relative to the field of view's centre (x right, y posterior)."""

    def __init__(self, rng: np.random.Generator, fov: float, extent_z: float) -> None:
        self.ax, self.ay = rng.uniform(135, 165), rng.uniform(95, 120)  # body half width, half depth
        self.bx, self.by = rng.normal(0, 6), rng.uniform(-30, -10)  # body centre
        self.wall, self.fat = rng.uniform(16, 28), rng.uniform(5, 18)
        self.wobble = (rng.uniform(0.02, 0.05), rng.uniform(60, 120), rng.uniform(0, 2 * np.pi))
        self.table_y = self.by + self.ay + rng.uniform(6, 18)  # top of the table under the back
        inner_x, inner_y = self.ax - self.wall, self.ay - self.wall
        self.lung_x, self.lung_r = 0.53 * inner_x, np.array([0.0, 0.9 * inner_y, 0.43 * inner_x])
        height = min(0.82 * extent_z, rng.uniform(230, 290))
        self.lung_z = rng.uniform(0.45, 0.55) * extent_z
        self.lung_r[0] = height / 2
        self.lung_y = self.by + 0.04 * self.ay
        self.heart_c = np.array([self.lung_z - 0.45 * height / 2, self.by - 0.25 * self.ay, rng.uniform(10, 25)])
        self.heart_r = np.array([rng.uniform(45, 60), rng.uniform(40, 50), rng.uniform(50, 62)])
        self.spine = (self.by + self.ay - self.wall - rng.uniform(18, 24), rng.uniform(16, 21))
        self.trachea = (self.by - 0.1 * self.ay, rng.uniform(8, 11), self.lung_z + 0.15 * height / 2)
        self.rib_period, self.rib_phase = rng.uniform(22, 28), rng.uniform(0, 25)

    def scale(self, z: np.ndarray) -> np.ndarray:
        amp, period, phase = self.wobble
        return 1.0 + amp * np.sin(2 * np.pi * z / period + phase)

    def lungs(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Lung mask (both lungs, heart carved out, inside the chest wall) on broadcast mm grids."""
        dz = ((z - self.lung_z) / self.lung_r[0]) ** 2
        dy = ((y - self.lung_y) / self.lung_r[1]) ** 2
        left = dz + dy + ((x - self.bx + self.lung_x) / self.lung_r[2]) ** 2 <= 1.0
        right = dz + dy + ((x - self.bx - self.lung_x) / self.lung_r[2]) ** 2 <= 1.0
        lung = left | right
        heart = sum(((g - c) / r) ** 2 for g, c, r in zip((z, y, x - self.bx), self.heart_c, self.heart_r)) <= 1.0
        lung &= ~heart
        cavity = ((x - self.bx) / (self.ax - self.wall)) ** 2 + ((y - self.by) / (self.ay - self.wall)) ** 2
        return lung & (cavity <= self.scale(z) ** 2)


def _vessel_tree(rng: np.random.Generator, anatomy: _Anatomy, side: float, shrink: float
                 ) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Segments (p0, p1 in mm z, y, x; radii r0, r1) of one lung's vessel tree, grown from its hilum.

    Six trunks leave the hilum; every segment forks in two, each child trying a few directions that keep it
    (and its radius plus ``shrink`` mm) inside the lung, down to vessels of 0.6 mm."""
    hilum = np.array([anatomy.lung_z + 0.1 * anatomy.lung_r[0], anatomy.lung_y,
                      anatomy.bx + side * (anatomy.lung_x - 0.6 * anatomy.lung_r[2])])
    segments = []
    trunks = [np.array([dz, dy, side * 0.8]) for dz, dy in ((1, 0), (-1, 0), (0.4, 0.7), (0.4, -0.7),
                                                          (-0.5, 0.7), (-0.5, -0.7))]
    stack = [(hilum, t / np.linalg.norm(t), 4.5, 0) for t in trunks]
    while stack:
        start, heading, radius, depth = stack.pop()
        for _ in range(1 if depth == 0 else 2):
            r_end = max(0.6, radius * 0.74)
            for _try in range(4):
                d = heading + rng.normal(scale=0.6, size=3)
                d /= np.linalg.norm(d)
                end = start + d * (rng.uniform(20, 45) * 0.8 ** depth + 6)
                probe = np.stack([end, end + d * (r_end + shrink)], axis=1)
                if np.all(anatomy.lungs(*probe)):
                    segments.append((start, end, radius, r_end))
                    if depth < 7 and r_end > 0.62:
                        stack.append((end, d, r_end, depth + 1))
                    break
    return segments


def _place_nodule(rng: np.random.Generator, anatomy: _Anatomy, radii: np.ndarray, juxta: bool,
                  placed: list[tuple[np.ndarray, float]], extent: np.ndarray) -> np.ndarray | None:
    """A centre in a lung (against the pleura when ``juxta``), apart from the nodules placed."""
    r = float(radii.max())
    for _ in range(200):
        side = rng.choice((-1.0, 1.0))
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        rho = rng.uniform(0.9, 0.97) if juxta else rng.uniform(0.1, 0.8) ** (1 / 3) * 0.85
        c = np.array([anatomy.lung_z, anatomy.lung_y, anatomy.bx + side * anatomy.lung_x]) + rho * u * anatomy.lung_r
        if np.any(c - r < 2) or np.any(c + r > extent - 2):
            continue
        probe = c if juxta else c + np.array([[0, 0, 0], *np.diag(radii + 2), *np.diag(-(radii + 2))])
        if not np.all(anatomy.lungs(*(np.atleast_1d(v) for v in np.asarray(probe).reshape(-1, 3).T))):
            continue
        if all(np.linalg.norm(c - o) > r + ro + 3.0 for o, ro in placed):
            return c
    return None


def _paint_capsule(slab: np.ndarray, lung: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray,
                   seg: tuple[np.ndarray, np.ndarray, float, float], hu: float, soft: float) -> None:
    """A tapered tube from p0 to p1, partial-volume edges, brightening the lung voxels it covers."""
    p0, p1, r0, r1 = seg
    lo, hi = np.minimum(p0, p1) - max(r0, r1) - soft, np.maximum(p0, p1) + max(r0, r1) + soft
    idx = [np.flatnonzero((g.ravel() >= a) & (g.ravel() <= b)) for g, a, b in zip((z, y, x), lo, hi)]
    if any(i.size == 0 for i in idx):
        return
    sl = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)
    gz, gy, gx = z.ravel()[sl[0]][:, None, None], y.ravel()[sl[1]][None, :, None], x.ravel()[sl[2]][None, None, :]
    axis = p1 - p0
    length2 = float(axis @ axis)
    t = np.clip(((gz - p0[0]) * axis[0] + (gy - p0[1]) * axis[1] + (gx - p0[2]) * axis[2]) / length2, 0.0, 1.0)
    dist = np.sqrt((gz - p0[0] - t * axis[0]) ** 2 + (gy - p0[1] - t * axis[1]) ** 2
                   + (gx - p0[2] - t * axis[2]) ** 2)
    cover = np.clip((r0 + t * (r1 - r0) - dist) / soft + 0.5, 0.0, 1.0)
    region, inside = slab[sl], lung[sl]
    np.maximum(region, np.where(inside, _LUNG + (hu - _LUNG) * cover, region), out=region)


def _paint_ellipsoid(slab: np.ndarray, lung: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray,
                     centre: np.ndarray, radii: np.ndarray, hu: float, soft: float) -> None:
    """An ellipsoid with a partial-volume edge, raising the lung voxels it covers to ``hu``."""
    lo, hi = centre - radii - soft, centre + radii + soft
    idx = [np.flatnonzero((g.ravel() >= a) & (g.ravel() <= b)) for g, a, b in zip((z, y, x), lo, hi)]
    if any(i.size == 0 for i in idx):
        return
    sl = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)
    gz, gy, gx = z.ravel()[sl[0]][:, None, None], y.ravel()[sl[1]][None, :, None], x.ravel()[sl[2]][None, None, :]
    rho = np.sqrt(((gz - centre[0]) / radii[0]) ** 2 + ((gy - centre[1]) / radii[1]) ** 2
                  + ((gx - centre[2]) / radii[2]) ** 2)
    cover = np.clip((1.0 - rho) * float(radii.mean()) / soft + 0.5, 0.0, 1.0)
    region, inside = slab[sl], lung[sl]
    np.maximum(region, np.where(inside, _LUNG + (hu - _LUNG) * cover, region), out=region)


def scan_geometry(cfg: ChestCTConfig, rng: np.random.Generator
                  ) -> tuple[tuple[int, int, int], tuple[float, float, float], float]:
    """Shape (z, y, x), spacing (z, y, x) mm and field of view (mm) of a scan: the field of view and the scan
    length (300-400 mm) are physical; the slice thickness is drawn from ``cfg.slice_thickness`` and only
    changed where ``cfg.slices`` cannot hold the length at it."""
    fov = float(rng.uniform(*cfg.fov_mm))
    thick = float(rng.choice(cfg.slice_thickness))
    extent_z = rng.uniform(300.0, 400.0)
    nz = int(np.clip(round(extent_z / thick), cfg.slices[0], cfg.slices[1]))
    thick = thick if round(extent_z / thick) == nz else float(extent_z / nz)
    return (nz, cfg.size, cfg.size), (thick, fov / cfg.size, fov / cfg.size), fov


def make_chest_scan(cfg: ChestCTConfig, index: int) -> ChestScan:
    """Scan ``index`` of the cohort (see the module docstring)."""
    rng = np.random.default_rng([cfg.seed, 7, index])
    uid = _uid(rng)
    n = int(cfg.size)
    (nz, _, _), (thick, pix, _), fov = scan_geometry(cfg, rng)
    spacing = np.array([thick, pix, pix])
    zs = np.arange(nz) * thick  # mm from the lowest slice
    ys = (np.arange(n) - (n - 1) / 2) * pix  # mm from the field of view's centre
    xs = ys.copy()
    anatomy = _Anatomy(rng, fov, nz * thick)
    extent = np.array([nz * thick, fov, fov])
    padding = int(rng.choice((-2000, -3024)))
    noise = rng.uniform(10.0, 25.0)

    # findings: nodules (annotated) and small ones under 3 mm (excluded)
    min_d = min(cfg.diameter_mm[1], max(cfg.diameter_mm[0], 1.2 * float(spacing.max())))
    lo_d, hi_d = np.log(min_d), np.log(max(min_d, cfg.diameter_mm[1]))
    findings: list[tuple[np.ndarray, np.ndarray, int, float]] = []  # centre, radii, kind, HU
    placed: list[tuple[np.ndarray, float]] = []
    annotated, excluded = [], []
    kinds = [False] * int(rng.choice(cfg.nodules_per_scan)) + [True] * int(rng.integers(0, 3))
    for small in kinds:
        d = rng.uniform(1.5, 3.0) if small else float(np.exp(rng.uniform(lo_d, hi_d)))
        radii = d / 2 * rng.uniform(0.9, 1.1, size=3)
        radii[1:] *= d / 2 / np.sqrt(radii[1] * radii[2])  # the axial diameter is d
        centre = _place_nodule(rng, anatomy, radii, rng.random() < 0.25, placed, extent)
        if centre is None:
            continue
        if thick > 3.0:  # coarse test sizes: on a slice centre, so the nodule shows in the image
            centre[0] = (np.round(centre[0] / thick)) * thick
        kind = 0 if small else int(rng.choice((0, 0, 1, 2)))
        findings.append((centre, radii, kind, rng.uniform(0.0, 60.0)))
        placed.append((centre, float(radii.max())))
        (excluded if small else annotated).append((centre, -1.0 if small and rng.random() < 0.5 else round(d, 2)))
    trees = [seg for side in (-1.0, 1.0) for seg in _vessel_tree(rng, anatomy, side, 2.0)]

    # in-plane fields, computed once
    yy, xx = ys[:, None], xs[None, :]
    q_body = np.sqrt(((xx - anatomy.bx) / anatomy.ax) ** 2 + ((yy - anatomy.by) / anatomy.ay) ** 2)
    depth_unit = min(anatomy.ax, anatomy.ay)
    theta = np.arctan2(yy - anatomy.by, xx - anatomy.bx)
    outside_fov = (xx ** 2 + yy ** 2) > (fov / 2) ** 2
    table_top = anatomy.table_y - 15.0 * (xx / 200.0) ** 2
    table = np.full((n, n), np.nan, dtype=np.float32)
    table[(yy >= table_top) & (yy < table_top + 4) & (np.abs(xx) < 230)] = _PLATE
    table[(yy >= table_top + 4) & (yy < table_top + 36) & (np.abs(xx) < 225)] = _FOAM
    table[(yy >= table_top + 36) & (yy < table_top + 40) & (np.abs(xx) < 230)] = _PLATE
    spine_d = np.sqrt((xx - anatomy.bx) ** 2 + (yy - anatomy.spine[0]) ** 2)
    trachea_d = np.sqrt((xx - anatomy.bx) ** 2 + (yy - anatomy.trachea[0]) ** 2)
    rib_shift = 35.0 * np.cos(theta)

    array = np.empty((nz, n, n), dtype=np.int16)
    soft = 0.5 * pix
    for z0 in range(0, nz, _SLAB):
        z = zs[z0:z0 + _SLAB][:, None, None]
        s = anatomy.scale(z)
        slab = np.where(np.isnan(table), _AIR, table)[None].repeat(len(z), axis=0).astype(np.float32)
        depth = (s - q_body[None]) * depth_unit  # mm inside the skin (approximately)
        body = depth > 0
        slab[body] = _SOFT
        slab[body & (depth < anatomy.fat)] = _FAT
        in_chest = (z >= anatomy.lung_z - 1.1 * anatomy.lung_r[0]) & (z <= anatomy.lung_z + 1.1 * anatomy.lung_r[0])
        band = (depth > anatomy.fat + 2) & (depth < anatomy.wall + 0.5 * anatomy.fat) & in_chest
        rib_z = np.mod(z + rib_shift[None] - anatomy.rib_phase, anatomy.rib_period)
        ribs = band & (np.abs(rib_z - anatomy.rib_period / 2) < 4.5) & (np.abs(theta + np.pi / 2) > 0.35)[None]
        slab[ribs] = _BONE
        slab[(spine_d < anatomy.spine[1])[None] & body] = 300.0
        slab[((spine_d >= anatomy.spine[1]) & (spine_d < anatomy.spine[1] + 3))[None] & body] = 800.0
        lung = anatomy.lungs(z, yy[None], xx[None])
        slab[lung] = _LUNG
        airway = (trachea_d < anatomy.trachea[1])[None] & (z > anatomy.trachea[2])
        slab[airway] = _AIR
        zr = zs[z0:z0 + _SLAB]
        zlo, zhi = zr[0] - 40, zr[-1] + 40
        for seg in trees:
            if min(seg[0][0], seg[1][0]) - 8 <= zhi and max(seg[0][0], seg[1][0]) + 8 >= zlo:
                _paint_capsule(slab, lung, zr, ys, xs, seg, 40.0, soft)
        for centre, radii, kind, hu in findings:
            if centre[0] + radii[0] + 2 < zr[0] or centre[0] - radii[0] - 2 > zr[-1]:
                continue
            if kind == 1:  # part-solid: ground glass with an off-centre solid core
                _paint_ellipsoid(slab, lung, zr, ys, xs, centre, radii, -600.0, soft)
                core = radii * 0.45
                _paint_ellipsoid(slab, lung, zr, ys, xs, centre + (radii - core) * 0.4, core, hu, soft)
            else:
                _paint_ellipsoid(slab, lung, zr, ys, xs, centre, radii, hu, soft)
                if kind == 2:  # calcified core
                    _paint_ellipsoid(slab, lung, zr, ys, xs, centre, radii * 0.6, 600.0, soft)
        slab += rng.standard_normal(slab.shape, dtype=np.float32) * np.float32(noise)
        slab[:, outside_fov] = padding
        np.clip(slab, -3024, 3071, out=slab)
        array[z0:z0 + len(zr)] = np.rint(slab).astype(np.int16)

    # world frame of the canonical array (identity direction), then the stored orientation
    centre_world = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20) + 180.0, rng.uniform(-400, -100)])
    origin = np.array([centre_world[0] + xs[0], centre_world[1] + ys[0], centre_world[2]])  # x, y, z

    def world(c: np.ndarray) -> tuple[float, float, float]:
        return (round(float(origin[0] + c[2] - xs[0]), 4), round(float(origin[1] + c[1] - ys[0]), 4),
                round(float(origin[2] + c[0]), 4))

    nodules, small = [(world(c), d) for c, d in annotated], [(world(c), d) for c, d in excluded]
    kind = "identity" if rng.random() >= cfg.rotated_fraction else str(rng.choice(("flipped", "rotated")))
    if kind == "flipped":  # stored index (k, j, i) is canonical (k, n-1-j, n-1-i)
        array = np.ascontiguousarray(array[:, ::-1, ::-1])
        origin = origin + np.array([(n - 1) * pix, (n - 1) * pix, 0.0])
    elif kind == "rotated":  # stored index (k, j, i) is canonical (k, i, n-1-j)
        array = np.ascontiguousarray(array[:, :, ::-1].transpose(0, 2, 1))
        origin = origin + np.array([(n - 1) * pix, 0.0, 0.0])
    return ChestScan(uid, array, (pix, pix, thick), tuple(float(o) for o in origin),
                     tuple(float(d) for d in _DIRECTIONS[kind]),
                     nodules, small, padding)


def _write_mhd(scan: ChestScan, folder: Path) -> Path:
    """``<uid>.raw`` (int16, little endian) and ``<uid>.mhd`` as LUNA16 ships them (header written last).

    MetaImage's ``TransformMatrix`` lists the axes' direction vectors one after the other, i.e. the
    transpose of SimpleITK's row-major direction."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"{scan.uid}.raw"
    scan.array.astype("<i2", copy=False).tofile(raw)
    nz, ny, nx = scan.array.shape
    header = "\n".join([
        "ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        "TransformMatrix = " + " ".join(f"{d:g}" for d in np.reshape(scan.direction, (3, 3)).T.ravel()),
        "Offset = " + " ".join(f"{o:.6f}" for o in scan.origin_xyz), "CenterOfRotation = 0 0 0",
        "AnatomicalOrientation = RAI", "ElementSpacing = " + " ".join(f"{s:.6f}" for s in scan.spacing_xyz),
        f"DimSize = {nx} {ny} {nz}", "ElementType = MET_SHORT", f"ElementDataFile = {raw.name}", ""])
    mhd = folder / f"{scan.uid}.mhd"
    mhd.write_text(header)
    return mhd


def _csv(rows: list[tuple[str, tuple[float, float, float], float]]) -> str:
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    lines += [f"{uid},{c[0]},{c[1]},{c[2]},{d:g}" for uid, c, d in rows]
    return "\n".join(lines) + "\n"


def write_chestct_cohort(out_dir: str | os.PathLike, cfg: ChestCTConfig | None = None, force: bool = False,
                         progress: bool = True) -> Path:
    """Write the cohort (see the module docstring) into ``out_dir``; scan i goes to ``subset{i % subsets}``.

    Written into a ``.partial`` folder beside ``out_dir`` and renamed at the end, so an interrupted run leaves
    no half cohort. Refuses an existing ``out_dir`` unless ``force`` (which replaces it whole).
    """
    cfg = cfg or ChestCTConfig()
    if cfg.num_scans < 1 or not 1 <= cfg.subsets <= 10 or cfg.size < 16:
        raise ValueError("--num-scans must be at least 1, --subsets 1-10 and --size at least 16")
    if not 1 <= cfg.slices[0] <= cfg.slices[1]:
        raise ValueError(f"--slices {cfg.slices[0]} {cfg.slices[1]}: give MIN <= MAX, both at least 1")
    out_dir = Path(out_dir)
    tmp = partial_folder(out_dir, force, "--out")
    tmp.mkdir(parents=True)
    nodules, excluded, uids = [], [], []
    for i in tqdm(range(cfg.num_scans), desc="chestct", unit="scan", disable=hidden(not progress)):
        scan = make_chest_scan(cfg, i)
        _write_mhd(scan, tmp / f"subset{i % cfg.subsets}")
        uids.append(scan.uid)
        nodules += [(scan.uid, c, d) for c, d in scan.nodules]
        excluded += [(scan.uid, c, d) for c, d in scan.excluded]
        del scan
    (tmp / "annotations.csv").write_text(_csv(nodules))
    (tmp / "annotations_excluded.csv").write_text(_csv(excluded))
    (tmp / "seriesuids.csv").write_text("\n".join(uids) + "\n")
    os.replace(tmp, out_dir)
    return out_dir
