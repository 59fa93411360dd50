"""Toy datasets: the paper's 2D tasks (shapes, patterns, scales) and a 3D task of filled vs hollow spheres.

2D (paper section 4.6): 320 x 320 images, zero background, each object imprinted by +0.2, then uniform
noise on every pixel. ``shapes``: class 0 a filled circle, class 1 the same circle with a centred hole
cut from image and mask; ``patterns``: as shapes, but the hole stays in the mask; ``scales``: filled
circles of two radii. Sizes follow the original code (radius 20, hole radius 4, radii 19 vs 20).

3D (``spheres``): CT-like volumes of varying shape with anisotropic spacing and a non-identity origin,
0-3 spheres per volume (in mm), class 0 filled, class 1 hollow (the hole is cut from the mask), and
some volumes without objects.

Every image is generated from its own seed ``(seed, split, index)``, so outputs are deterministic and
independent of the order of generation.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retinaunet.io import Geometry, write_image, write_json
from retinaunet.layout import task_name
from retinaunet.progress import hidden

KINDS_2D = ("shapes", "patterns", "scales")
KINDS_3D = ("spheres",)
KINDS = KINDS_2D + KINDS_3D
DEFAULT_NUMBERS = {"shapes": 101, "patterns": 102, "scales": 103, "spheres": 104}
SPLIT_IDS = {"train": 0, "test": 1}


@dataclass
class Toy2DConfig:
    """Options of the 2D toy tasks (defaults as the paper ran them)."""

    kind: str = "shapes"
    size: int = 320
    radius: float = 20.0
    hole_radius: float = 4.0
    scale_radii: tuple[float, float] = (19.0, 20.0)
    objects_per_image: int = 1
    intensity: float = 0.2
    noise: float = 1.0
    num_train: int = 1000
    num_test: int = 1000
    seed: int = 0


@dataclass
class Toy3DConfig:
    """Options of the 3D toy task."""

    shape_min: tuple[int, int, int] = (24, 56, 56)
    shape_max: tuple[int, int, int] = (32, 72, 72)
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8)
    origin: tuple[float, float, float] = (-120.5, 35.25, 410.0)
    radius_mm: tuple[float, float] = (6.0, 9.0)
    hole_fraction: float = 0.5
    max_objects: int = 3
    empty_fraction: float = 0.2
    background: float = -800.0
    intensity: float = 800.0
    noise: float = 150.0
    num_train: int = 40
    num_test: int = 20
    seed: int = 0
    extra: dict = field(default_factory=dict)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def _disk(shape: Sequence[int], center: Sequence[float], radius: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    dist2 = sum((g + 0.5 - c) ** 2 for g, c in zip(grids, center))
    return dist2 <= radius ** 2


def _place(rng: np.random.Generator, shape: Sequence[float], radii: Sequence[float], margin: float,
           scale: Sequence[float] | None = None, tries: int = 200, strict: bool = True) -> list[np.ndarray | None]:
    """Centres for objects of the given radii (in the units of ``scale``) that do not touch.

    With ``strict=False`` an object that finds no room gets ``None`` instead of failing the image.
    """
    scale = np.ones(len(shape)) if scale is None else np.asarray(scale, dtype=float)
    centers: list[np.ndarray | None] = []
    placed: list[tuple[np.ndarray, float]] = []
    for r in radii:
        lo = (r + margin) / scale
        hi = np.asarray(shape, dtype=float) - lo
        for _ in range(tries if np.all(hi >= lo) else 0):
            c = rng.uniform(lo, hi)
            if all(np.linalg.norm((c - o) * scale) > r + ro + margin for o, ro in placed):
                centers.append(c)
                placed.append((c, r))
                break
        else:
            if strict:
                raise ValueError(f"cannot place {len(radii)} objects of radius {max(radii)} in an image of "
                                 f"{shape}; use fewer objects or a larger image")
            centers.append(None)
    return centers


def make_toy_2d(cfg: Toy2DConfig, split: str, index: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """One 2D toy image: ``float32[H, W]`` image, ``int16[H, W]`` instance map, ``{id: class}``."""
    rng = _rng(cfg.seed, split, index)
    shape = (cfg.size, cfg.size)
    classes = rng.integers(0, 2, size=cfg.objects_per_image)
    if cfg.kind == "scales":
        radii = [cfg.scale_radii[c] for c in classes]
    else:
        radii = [cfg.radius] * len(classes)
    centers = _place(rng, shape, radii, margin=2.0)
    image = np.zeros(shape, dtype=np.float32)
    inst = np.zeros(shape, dtype=np.int16)
    instances: dict[int, int] = {}
    for i, (c, r, center) in enumerate(zip(classes, radii, centers), start=1):
        disk = _disk(shape, center, r)
        painted = disk
        if cfg.kind in ("shapes", "patterns") and c == 1:
            painted = disk & ~_disk(shape, center, cfg.hole_radius)
        image[painted] += cfg.intensity
        inst[painted if cfg.kind == "shapes" else disk] = i
        instances[i] = int(c)
    image += rng.uniform(0.0, cfg.noise, size=shape).astype(np.float32)
    return image, inst, instances


def make_toy_3d(cfg: Toy3DConfig, split: str, index: int
                ) -> tuple[np.ndarray, np.ndarray, dict[int, int], Geometry]:
    """One 3D toy volume: ``float32[Z, Y, X]`` CT-like image, ``int16`` instance map, ``{id: class}``, geometry."""
    rng = _rng(cfg.seed, split, index)
    shape = tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(cfg.shape_min, cfg.shape_max))
    n = 0 if rng.random() < cfg.empty_fraction else int(rng.integers(1, cfg.max_objects + 1))
    radii = list(rng.uniform(*cfg.radius_mm, size=n))
    classes = rng.integers(0, 2, size=n)
    spacing = np.asarray(cfg.spacing)
    extent_mm = np.asarray(shape) * spacing
    centers_mm = _place(rng, extent_mm, radii, margin=2.0, strict=False)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    image = np.full(shape, cfg.background, dtype=np.float32)
    inst = np.zeros(shape, dtype=np.int16)
    instances: dict[int, int] = {}
    for i, (c, r, cmm) in enumerate(zip(classes, radii, centers_mm), start=1):
        if cmm is None:
            continue
        dist = np.sqrt(sum(((g + 0.5) * s - cc) ** 2 for g, s, cc in zip(grids, spacing, cmm)))
        body = dist <= r
        if c == 1:
            body &= dist > cfg.hole_fraction * r
        if not body.any():
            continue
        image[body] += cfg.intensity
        inst[body] = i
        instances[i] = int(c)
    image += rng.normal(0.0, cfg.noise, size=shape).astype(np.float32)
    geom = Geometry(spacing=tuple(float(s) for s in cfg.spacing), origin=tuple(cfg.origin),
                    direction=tuple(np.eye(3).ravel().tolist()), shape=shape)
    return image, inst, instances, geom


def _write_split(task_dir: Path, split: str, count: int, make: Callable[[int], tuple], progress: bool) -> None:
    suffix = "Tr" if split == "train" else "Ts"
    images, labels = task_dir / "raw_splitted" / f"images{suffix}", task_dir / "raw_splitted" / f"labels{suffix}"
    for index in tqdm(range(count), desc=f"toy {split}", disable=hidden(not progress), leave=False):
        image, inst, instances, geom = make(index)
        name = f"case_{index:04d}"
        write_image(image, geom, images / f"{name}_0000.nii.gz")
        write_image(inst, geom, labels / f"{name}.nii.gz")
        write_json({"instances": {str(k): v for k, v in instances.items()}}, labels / f"{name}.json", indent=None)


def partial_folder(target: Path, force: bool, other: str) -> Path:
    """The empty ``.partial`` folder beside ``target`` that a generator writes into and renames to ``target``
    at the end (an interrupted run leaves nothing half written there). An existing ``target`` is refused
    unless ``force``, which removes it; ``other`` names the option that picks another target."""
    if target.exists():
        if not force:
            raise FileExistsError(f"{target} already exists: pass --force to replace it, or another {other}")
        shutil.rmtree(target)
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def write_task_folder(task_dir: Path, force: bool, dim: int, labels: dict[str, str], modalities: dict[str, str],
                      counts: dict[str, int], make: Callable[[str], Callable[[int], tuple]], progress: bool) -> Path:
    """Write a generated task: ``dataset.json`` and each split's ``counts[split]`` cases from ``make(split)``.

    Writes into a ``.partial`` folder beside ``task_dir`` and renames it at the end, so an interrupted run
    leaves no half task. Refuses to touch an existing task folder unless ``force`` (which replaces it whole).
    """
    tmp_dir = partial_folder(task_dir, force, "--task-number")
    write_json({"task": task_dir.name, "dim": dim, "labels": labels, "modalities": modalities,
                "test_labels": True}, tmp_dir / "dataset.json")
    for split, count in counts.items():
        _write_split(tmp_dir, split, count, make(split), progress)
    os.replace(tmp_dir, task_dir)
    return task_dir


def write_toy_task(kind: str, root: str | os.PathLike, number: int | None = None, name: str | None = None,
                   config: Toy2DConfig | Toy3DConfig | None = None, force: bool = False,
                   progress: bool = True) -> Path:
    """Write a toy task in the standard raw layout under ``root`` and return its folder.

    Refuses to touch an existing task folder unless ``force`` (which replaces it whole).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown toy kind '{kind}': choose one of {', '.join(KINDS)}")
    number = DEFAULT_NUMBERS[kind] if number is None else number
    name = name or f"Toy{kind.capitalize()}"
    task_dir = Path(root) / task_name(number, name)
    if kind in KINDS_2D:
        cfg = config if isinstance(config, Toy2DConfig) else Toy2DConfig(kind=kind)
        cfg.kind = kind
        flat = Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (cfg.size, cfg.size))

        def make(split: str) -> Callable[[int], tuple]:
            return lambda i: (*make_toy_2d(cfg, split, i), flat)
        labels = {"0": "circle", "1": "donut"} if kind != "scales" else {"0": "small", "1": "large"}
        dim, modalities = 2, {"0": "toy"}
    else:
        cfg = config if isinstance(config, Toy3DConfig) else Toy3DConfig()

        def make(split: str) -> Callable[[int], tuple]:
            return lambda i: make_toy_3d(cfg, split, i)
        labels, dim, modalities = {"0": "filled", "1": "hollow"}, 3, {"0": "CT"}
    return write_task_folder(task_dir, force, dim, labels, modalities,
                             {"train": cfg.num_train, "test": cfg.num_test}, make, progress)
