"""Reading and writing images, label maps and json files, keeping geometry exactly.

Arrays are in SimpleITK's array order (``(Z, Y, X)`` or ``(Y, X)``); :class:`Geometry` keeps the
spacing in that same array order, while ``origin`` and ``direction`` stay in SimpleITK's physical
(x, y, z) convention, so a world point is exactly what SimpleITK would compute.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import struct
import tempfile
import zlib
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


NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes whose voxels can be NaN
_CHUNK = 1 << 22


def _nifti_layout(head: bytes) -> tuple[str, int, int, int] | None:
    """(byte order, datatype, voxel data offset, voxel data bytes) of a NIfTI-1/2 header, else None."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348 and head[344:347] == b"n+1":
            dims = struct.unpack(order + "8h", head[40:56])
            datatype, bitpix = struct.unpack(order + "2h", head[70:74])
            offset = max(int(struct.unpack(order + "f", head[108:112])[0]), 348)
        elif len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540 and head[4:7] == b"n+2":
            datatype, bitpix = struct.unpack(order + "2h", head[12:16])
            dims = struct.unpack(order + "8q", head[16:80])
            offset = max(int(struct.unpack(order + "q", head[168:176])[0]), 540)
        else:
            continue
        if not 1 <= dims[0] <= 7 or bitpix <= 0:
            return None
        count = int(np.prod([max(int(d), 1) for d in dims[1:dims[0] + 1]], dtype=np.int64))
        return order, int(datatype), offset, count * bitpix // 8
    return None


def check_nifti_voxels(path: str | os.PathLike) -> None:
    """Read a NIfTI file's voxel bytes as stored and raise :class:`ReadError` when they are incomplete or NaN.

    SimpleITK fills the missing part of a truncated ``.nii.gz`` with zeros and reads a stored NaN as 0,
    so both are checked here, on the raw stream: the gzip stream must end properly, hold as many bytes
    as the header's dimensions and datatype say, and float voxels must be finite. Other formats pass.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(540)
            layout = _nifti_layout(head)
            if layout is None:
                return
            order, datatype, offset, nbytes = layout
            dtype = np.dtype(order + NIFTI_FLOAT_TYPES[datatype]) if datatype in NIFTI_FLOAT_TYPES else None
            fh.seek(offset)
            got, bad, carry = 0, 0, b""
            while got < nbytes:
                chunk = fh.read(min(_CHUNK, nbytes - got))
                if not chunk:
                    break
                got += len(chunk)
                if dtype is not None:
                    data = carry + chunk
                    usable = len(data) - len(data) % dtype.itemsize
                    bad += int((~np.isfinite(np.frombuffer(data[:usable], dtype))).sum())
                    carry = data[usable:]
            if opener is gzip.open:
                while fh.read(_CHUNK):  # the rest of the stream, so a cut-off end is noticed
                    pass
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ReadError(f"{path}: the compressed data is cut short or corrupt ({err}); the file is incomplete, "
                        "copy or export it again") from None
    if got < nbytes:
        raise ReadError(f"{path}: holds {got} of the {nbytes} bytes of voxel data its header announces; the file "
                        "is incomplete, copy or export it again")
    if bad:
        raise ReadError(f"{path}: {bad} NaN/inf voxels; replace them (e.g. with the background value)")


def read_sitk(path: str | os.PathLike) -> sitk.Image:
    """Read any image SimpleITK can read, with a one-line error naming the file.

    NIfTI files are checked first for truncation and NaN voxels, which SimpleITK reads as zeros.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError(f"{path}: file not found")
    check_nifti_voxels(path)
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
        del array
    if geometry is None:
        raise ReadError("read_case got no files")
    # one modality (CT): a view, not a copy; stacking would hold the float32 scan twice at the peak
    return (arrays[0][None] if len(arrays) == 1 else np.stack(arrays)), geometry


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
    try:
        mapping = {int(k): int(v) for k, v in instances.items()}
    except (TypeError, ValueError):
        raise ReadError(f"{json_file}: instance ids and classes must be integers") from None
    return compact_instances(array, mapping, label_file)


DENSE_IDS = 65535  # larger ids are renumbered: per-id tables stay small


def compact_instances(array: np.ndarray, mapping: dict[int, int], source: str | os.PathLike = "instance map"
                      ) -> tuple[np.ndarray, dict[int, int]]:
    """An instance map as ``int32`` with its ``{id: class}``; ids that do not fit int32 are renumbered 1..N.

    Casting ids above 2^31 would wrap them (an object vanishes or takes another's class), and code
    indexing by id would need memory growing with the largest id; renumbering in sorted order keeps
    every object and its class. Negative ids are an error.
    """
    if array.size and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
        raise ReadError(f"{source}: negative values in the instance map; use 0 for background, 1..N for objects")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.isfinite(array).all() or not np.all(array == np.round(array)) or (array.size and array.min() < 0):
            raise ReadError(f"{source}: instance map holds values that are not ids (>= 0 integers); "
                            "save it as integers")
    top = int(array.max(initial=0))
    if top <= DENSE_IDS:
        return array.astype(np.int32, copy=False), mapping
    ids = np.unique(array)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids]).astype(ids.dtype)
    compact = np.searchsorted(ids, array).astype(np.int32)
    renumber = {int(old): new for new, old in enumerate(ids.tolist())}
    new_mapping = {renumber[k]: v for k, v in mapping.items() if k in renumber}
    return compact, new_mapping


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


TEMP_MARK = ".part-"  # in every temporary name, so folder scans can skip files still being written


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def is_temporary(path: str | os.PathLike) -> bool:
    """True for a file that :func:`atomic_path` is still writing (hidden, with the temporary mark)."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` (same suffix), renamed onto ``path`` when the block succeeds.

    The temporary file is created by ``mkstemp`` (random name, ``O_EXCL``), so nothing planted in a
    shared folder, such as a symbolic link at a guessable name, can redirect the write, and writers in
    the same folder never share a temporary file. An interrupted write never leaves a half file that a
    rerun would trust; a failed one leaves nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=suffix, dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; the result gets the usual permissions
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None and err.errno is not None:  # e.g. a full disk met by write(): name the file
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_image(array: np.ndarray, geometry: Geometry | None, path: str | os.PathLike) -> Path:
    """Write an array with the given geometry (atomically: temporary name, then rename)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    if geometry is not None:
        geometry.apply_to(image)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), True)
        except RuntimeError as err:  # SimpleITK reports a failed write (full disk ...) as RuntimeError
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
            raise OSError(f"{path}: SimpleITK cannot write it ({reason}); is the disk full?") from None
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
