"""Reading and writing images, label maps and json files, keeping geometry exactly.

Arrays are in SimpleITK's array order (``(Z, Y, X)`` or ``(Y, X)``); :class:`Geometry` keeps the
spacing in that same array order, while ``origin`` and ``direction`` stay in SimpleITK's physical
(x, y, z) convention, so a world point is exactly what SimpleITK would compute.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk


class ReadError(RuntimeError):
    """A file that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class Geometry:
    """Where an array lies in the world.

    spacing: per array axis (z, y, x) in mm; origin: physical (x, y, z) of voxel 0; direction: row-major
    cosine matrix as SimpleITK gives it; shape: the array's spatial shape (array order).
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return len(self.spacing)

    @classmethod
    def from_image(cls, image: sitk.Image) -> Geometry:
        return cls(
            spacing=tuple(float(s) for s in reversed(image.GetSpacing())),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
            shape=tuple(int(s) for s in reversed(image.GetSize())),
        )

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(tuple(reversed(self.spacing)))
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def _matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(self.dim, self.dim)

    def index_to_world(self, index: np.ndarray | Sequence[float]) -> np.ndarray:
        """Continuous array-order indices ``[..., d]`` to physical points ``[..., d]`` (x, y, z mm)."""
        idx = np.asarray(index, dtype=np.float64)[..., ::-1]
        scaled = idx * np.asarray(self.spacing[::-1])
        return scaled @ self._matrix().T + np.asarray(self.origin)

    def world_to_index(self, point: np.ndarray | Sequence[float]) -> np.ndarray:
        """Physical points ``[..., d]`` (x, y, z mm) to continuous array-order indices ``[..., d]``."""
        rel = np.asarray(point, dtype=np.float64) - np.asarray(self.origin)
        idx_xyz = rel @ self._matrix() / np.asarray(self.spacing[::-1])
        return idx_xyz[..., ::-1]

    def same_as(self, other: Geometry, rtol: float = 1e-4, atol: float = 1e-3) -> str | None:
        """None when both describe the same grid (within tolerance), else what differs."""
        if self.shape != other.shape:
            return f"shape {other.shape} differs from {self.shape}"
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
                return f"{name} {tuple(np.round(b, 4))} differs from {tuple(np.round(a, 4))}"
        return None

    def to_dict(self) -> dict[str, list]:
        return {"spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        return cls(tuple(map(float, d["spacing"])), tuple(map(float, d["origin"])),
                   tuple(map(float, d["direction"])), tuple(map(int, d["shape"])))


def read_sitk(path: str | os.PathLike) -> sitk.Image:
    """Read any image SimpleITK can read, with a one-line error naming the file."""
    path = Path(path)
    if not path.exists():
        raise ReadError(f"{path}: file not found")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise ReadError(f"{path}: SimpleITK cannot read it ({reason}); re-export it as .nii.gz") from None


def read_header(path: str | os.PathLike) -> tuple[Geometry, str]:
    """Geometry and pixel type of an image without loading its voxels."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ReadError(f"{path}: SimpleITK cannot read its header; re-export it as .nii.gz") from None
    geom = Geometry(
        spacing=tuple(float(s) for s in reversed(reader.GetSpacing())),
        origin=tuple(float(o) for o in reader.GetOrigin()),
        direction=tuple(float(d) for d in reader.GetDirection()),
        shape=tuple(int(s) for s in reversed(reader.GetSize())),
    )
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if reader.GetNumberOfComponents() > 1:
        pixel = f"vector of {reader.GetNumberOfComponents()} {pixel}"
    return geom, pixel


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """One image as an array (array order) and its geometry."""
    image = read_sitk(path)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise ReadError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                        "store each modality as its own file (_0000, _0001, ...)")
    return sitk.GetArrayFromImage(image), Geometry.from_image(image)


def read_case(files: Sequence[str | os.PathLike]) -> tuple[np.ndarray, Geometry]:
    """All modalities of a case stacked channel first: ``float32[C, *S]`` and the first one's geometry."""
    arrays, geometry = [], None
    for f in files:
        array, geom = read_image(f)
        if geometry is None:
            geometry = geom
        elif (diff := geometry.same_as(geom)) is not None:
            raise ReadError(f"{f}: {diff} of the first modality; resample it onto the first modality's grid")
        arrays.append(array.astype(np.float32, copy=False))
    if geometry is None:
        raise ReadError("read_case got no files")
    return np.stack(arrays), geometry


def read_label(label_file: str | os.PathLike, json_file: str | os.PathLike | None = None
               ) -> tuple[np.ndarray, dict[int, int]]:
    """An instance map (``int32[*S]``, 0 background) and its ``{instance id: class}`` mapping."""
    label_file = Path(label_file)
    array, _ = read_image(label_file)
    if json_file is None:
        json_file = label_json_path(label_file)
    data = read_json(json_file)
    instances = data.get("instances", {}) if isinstance(data, dict) else None
    if not isinstance(instances, dict):
        raise ReadError(f"{json_file}: expected {{\"instances\": {{\"1\": 0, ...}}}} (instance id -> class)")
    return array.astype(np.int32, copy=False), {int(k): int(v) for k, v in instances.items()}


def label_json_path(label_file: str | os.PathLike) -> Path:
    """``case.nii.gz`` -> ``case.json`` beside it."""
    label_file = Path(label_file)
    return label_file.with_name(strip_image_suffix(label_file.name) + ".json")


IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff", ".png")


def strip_image_suffix(name: str) -> str:
    """File name without its image extension (``a_0000.nii.gz`` -> ``a_0000``)."""
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name.split(".")[0]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that is renamed onto ``path`` when the block succeeds.

    An interrupted write never leaves a half file that a rerun would trust; a failed one leaves nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_image(array: np.ndarray, geometry: Geometry | None, path: str | os.PathLike) -> Path:
    """Write an array with the given geometry (atomically: temporary name, then rename)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    if geometry is not None:
        geometry.apply_to(image)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise ReadError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReadError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); fix the file") from None


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(obj: Any, path: str | os.PathLike, indent: int | None = 2) -> Path:
    """Write JSON atomically, so a reader never sees half a file."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=indent, default=_to_jsonable)
        fh.write("\n")
    return Path(path)


def save_npy(array: np.ndarray, path: str | os.PathLike) -> Path:
    """``np.save`` atomically (memory-mappable ``.npy``)."""
    with atomic_path(path) as tmp:
        np.save(tmp, array)
    return Path(path)
