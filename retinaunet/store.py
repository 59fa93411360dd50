"""The preprocessed store: the one owner of a preprocessed case's files and of the 2Dc channel layout.

A case of ``preprocessed/<plan>/`` is three files: ``<case>.npy`` float32 ``[C, *S]`` (memory-mappable),
``<case>_seg.npy`` int32 ``[*S]`` instance ids, and ``<case>.json`` its properties (geometry, instances,
boxes, the key of its inputs). The json is written last and removed first, so a case whose json exists is
complete. `rud_preprocess` writes through :func:`save_case`; the training loader and the trainer's
validation and test prediction read through :func:`load_case` / :func:`load_props`.

2Dc: a slice ``z`` is fed to a 2D network with ``k`` context slices on each side as channels,
modality-major: ``channel = m * (2k + 1) + (dz + k)`` for ``dz = -k..k``; slices outside the volume are
zero. :func:`stack_context` is that layout; the training loader and the tiled predictor both use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retinaunet.io import read_json, save_npy, write_json

__all__ = ["CaseFiles", "case_files", "list_cases", "save_case", "load_case", "load_props", "load_seg",
           "invalidate", "is_current", "case_classes", "ground_truth", "stack_context", "context_slice",
           "context_region", "context_channels", "read_region"]


@dataclass(frozen=True)
class CaseFiles:
    """The three files of one preprocessed case."""

    data: Path
    seg: Path
    props: Path

    def complete(self) -> bool:
        return self.props.exists() and self.data.exists() and self.seg.exists()


def case_files(folder: str | os.PathLike, name: str) -> CaseFiles:
    folder = Path(folder)
    return CaseFiles(folder / f"{name}.npy", folder / f"{name}_seg.npy", folder / f"{name}.json")


def list_cases(folder: str | os.PathLike) -> list[str]:
    """Names of the complete cases of a preprocessed folder, sorted (other writers' temporary files, which
    start with a dot, are not cases)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json")
                  if not p.name.startswith(".") and case_files(folder, p.stem).data.exists())


def invalidate(folder: str | os.PathLike, name: str) -> None:
    """Remove the case's json: from here on the case is not trusted until :func:`save_case` completes."""
    case_files(folder, name).props.unlink(missing_ok=True)


def save_case(folder: str | os.PathLike, name: str, data: np.ndarray, seg: np.ndarray,
              props: dict[str, Any]) -> CaseFiles:
    """Write a case atomically: the arrays first, the json last."""
    files = case_files(folder, name)
    invalidate(folder, name)
    save_npy(data, files.data)
    save_npy(seg, files.seg)
    write_json(props, files.props)
    return files


def load_props(folder: str | os.PathLike, name: str) -> dict[str, Any]:
    files = case_files(folder, name)
    if not files.props.exists():
        raise FileNotFoundError(f"{files.props} not found: run rud_preprocess for this plan")
    return read_json(files.props)


def load_case(folder: str | os.PathLike, name: str, mmap: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """(data ``[C, *S]``, memory-mapped unless ``mmap`` is False; properties) of one case."""
    props = load_props(folder, name)
    return np.load(case_files(folder, name).data, mmap_mode="r" if mmap else None), props


def load_seg(folder: str | os.PathLike, name: str, mmap: bool = True) -> np.ndarray:
    return np.load(case_files(folder, name).seg, mmap_mode="r" if mmap else None)


def is_current(folder: str | os.PathLike, name: str, key: str) -> bool:
    """True when the case is complete and was made from inputs with this ``key``."""
    files = case_files(folder, name)
    if not files.complete():
        return False
    try:
        return read_json(files.props).get("key") == key
    except Exception:  # noqa: BLE001 - unreadable: redo
        return False


def case_classes(folder: str | os.PathLike) -> dict[str, set[int]]:
    """``{case: classes present}`` of the complete cases of a preprocessed folder."""
    out = {}
    for name in list_cases(folder):
        out[name] = {int(c) for c in load_props(folder, name).get("instances", {}).values()}
    return out


def ground_truth(props: dict[str, Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``float[N, 2*dim]`` (preprocessed coordinates) and classes ``int64[N]`` of a case's properties."""
    ids = sorted(props.get("boxes", {}), key=int)
    boxes = np.array([props["boxes"][i] for i in ids], dtype=np.float64).reshape(-1, 2 * dim)
    labels = np.array([props["instances"][i] for i in ids], dtype=np.int64)
    return boxes, labels


# ----------------------------------------------------------------------------------------------------- 2Dc
def context_channels(modalities: int, context: int) -> int:
    """Input channels of a 2Dc network: every modality times ``2k + 1`` slices."""
    return modalities * (2 * context + 1)


def stack_context(block: np.ndarray) -> np.ndarray:
    """``[C, 2k+1, *S]`` (modalities x slices z-k..z+k) -> the network's ``[C * (2k+1), *S]`` channels."""
    return block.reshape(block.shape[0] * block.shape[1], *block.shape[2:])


def context_slice(data: np.ndarray, z: int, context: int) -> np.ndarray:
    """2Dc input of slice ``z``: ``float32[C * (2k+1), Y, X]`` from ``data: [C, Z, Y, X]``."""
    c, nz = data.shape[0], data.shape[1]
    width = 2 * context + 1
    block = np.zeros((c, width, *data.shape[2:]), dtype=np.float32)
    lo, hi = max(0, z - context), min(nz, z + context + 1)
    block[:, lo - (z - context): hi - (z - context)] = data[:, lo:hi]
    return stack_context(block)


def read_region(array: np.ndarray, lo: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[..., lo:lo + size]`` over the last ``len(lo)`` axes, zero where the region leaves the array.

    Slices only the region, so a memory-mapped array reads just those bytes.
    """
    nd = len(lo)
    out = np.zeros(array.shape[:-nd] + tuple(int(s) for s in size), dtype=array.dtype)
    src, dst = [], []
    for start, length, extent in zip(lo, size, array.shape[-nd:]):
        a, b = max(int(start), 0), min(int(start) + int(length), extent)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(start), b - int(start)))
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


def context_region(data: np.ndarray, lo: Sequence[int], size: Sequence[int], context: int) -> np.ndarray:
    """2Dc region of ``data: [C, Z, Y, X]`` around slice ``lo[0]``: ``[C * (2k+1), *size]``, corner ``lo[1:]``."""
    return stack_context(read_region(data, [lo[0] - context, *lo[1:]], [2 * context + 1, *size]))
