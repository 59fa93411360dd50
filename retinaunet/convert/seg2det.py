"""Semantic segmentation tasks (nnU-Net / Medical Segmentation Decathlon layout) -> instance maps.

Source: a task folder with ``dataset.json`` (nnU-Net v1/MSD ``"labels": {"0": "background", "1": "tumour"}``
or v2 ``"labels": {"background": 0, "tumour": 1}``; modalities from ``"modality"`` or ``"channel_names"``),
``imagesTr/<case>_0000.nii.gz`` (one file per modality; single-modality ``<case>.nii.gz`` is accepted too),
``labelsTr/<case>.nii.gz`` and optionally ``imagesTs`` (+ ``labelsTs``). Every connected component of a
chosen label value becomes an instance of that label's class; components smaller than ``min_size_mm3``
are dropped (and reported).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from retinaunet.convert.writer import ConvertError, Summary, TaskWriter, case_id
from retinaunet.io import IMAGE_SUFFIXES, read_image, read_json, strip_image_suffix
from retinaunet.progress import hidden
from retinaunet.shard import in_shard

__all__ = ["convert_seg2det", "instances_from_semantic", "read_seg_dataset"]

MOD = re.compile(r"^(?P<case>.+)_(?P<mod>\d{4})$")


def read_seg_dataset(source: Path) -> tuple[dict[int, str], list[str]]:
    """({label value: name} without background, modality names) of an nnU-Net/MSD ``dataset.json``."""
    path = source / "dataset.json"
    if not path.is_file():
        raise ConvertError(f"{path}: not found; point at an nnU-Net/MSD task folder (dataset.json, imagesTr, "
                           "labelsTr)")
    data = read_json(path)
    raw = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise ConvertError(f"{path}: 'labels' missing; expected {{\"0\": \"background\", \"1\": \"name\"}}")
    labels: dict[int, str] = {}
    for k, v in raw.items():
        if str(k).lstrip("-").isdigit():
            labels[int(k)] = str(v)
        elif isinstance(v, int) or str(v).isdigit():
            labels[int(v)] = str(k)
        else:
            raise ConvertError(f"{path}: label entry {k!r}: {v!r} is neither 'value: name' nor 'name: value' "
                               "(region-based labels are not supported)")
    labels.pop(0, None)
    mods = data.get("modality") or data.get("channel_names") or {"0": "image"}
    modalities = [str(mods[k]) for k in sorted(mods, key=int)]
    return dict(sorted(labels.items())), modalities


def _cases(folder: Path, n_mod: int) -> dict[str, list[Path]]:
    files: dict[str, dict[int, Path]] = {}
    if not folder.is_dir():
        return {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        stem = strip_image_suffix(f.name)
        m = MOD.match(stem)
        case, mod = (m.group("case"), int(m.group("mod"))) if m else (stem, 0)
        files.setdefault(case, {})[mod] = f
    out = {}
    for case, mods in files.items():
        if sorted(mods) != list(range(n_mod)):
            raise ConvertError(f"{folder}: case {case} has modalities {sorted(mods)}, dataset.json names {n_mod}; "
                               "add the missing files")
        out[case] = [mods[k] for k in range(n_mod)]
    return out


def instances_from_semantic(seg: np.ndarray, values: Sequence[int], voxel_mm3: float, min_size_mm3: float = 0.0,
                            connectivity: str = "full") -> tuple[np.ndarray, dict[int, int], list[tuple[int, float]]]:
    """Connected components of each label value -> (instance map uint16, {id: class}, dropped [(value, mm3)]).

    ``values[k]`` becomes class k. connectivity "full" joins voxels touching at a corner, "face" only
    through faces.
    """
    structure = ndimage.generate_binary_structure(seg.ndim, seg.ndim if connectivity == "full" else 1)
    instances = np.zeros(seg.shape, dtype=np.uint16)
    classes: dict[int, int] = {}
    dropped = []
    for cls, value in enumerate(values):
        comp, n = ndimage.label(seg == value, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        for k in range(1, n + 1):
            volume = float(sizes[k]) * voxel_mm3
            if volume < min_size_mm3:
                dropped.append((int(value), volume))
                continue
            new_id = len(classes) + 1
            instances[comp == k] = new_id
            classes[new_id] = cls
    return instances, classes, dropped


def convert_seg2det(source: str | os.PathLike, task_dir: str | os.PathLike, label_values: Sequence[int] | None = None,
                    min_size_mm3: float = 0.0, connectivity: str = "full", shard: tuple[int, int] = (0, 1),
                    progress: bool = True) -> Summary:
    """Convert an nnU-Net/MSD segmentation task into ``task_dir`` (resumable)."""
    source = Path(source)
    labels, modalities = read_seg_dataset(source)
    values = list(label_values) if label_values else list(labels)
    unknown = [v for v in values if v not in labels]
    if unknown:
        raise ConvertError(f"{source / 'dataset.json'}: label value(s) {unknown} not among {sorted(labels)}")
    train = _cases(source / "imagesTr", len(modalities))
    test = _cases(source / "imagesTs", len(modalities))
    if not train:
        raise ConvertError(f"{source / 'imagesTr'}: no images")
    test_labels = bool(test) and all(_label_file(source / "labelsTs", c) for c in test)
    writer = TaskWriter(task_dir, [labels[v] for v in values], modalities, dim=_dim(next(iter(train.values()))[0]),
                        test_labels=test_labels or not test).start()
    taken: set[str] = set()
    ids = {(split, c): case_id(c, taken) for split, cases in (("train", train), ("test", test)) for c in sorted(cases)}
    writer.write_case_names({cid: c for (_, c), cid in ids.items()})
    mine = in_shard(ids.values(), shard)
    todo = [(split, c) for (split, c), cid in sorted(ids.items()) if cid in mine]
    for split, case in tqdm(todo, desc="seg2det", unit="case", disable=hidden(not progress)):
        cid = ids[(split, case)]
        files = (train if split == "train" else test)[case]
        label_dir = source / ("labelsTr" if split == "train" else "labelsTs")
        label = _label_file(label_dir, case)
        if split == "test" and not test_labels:
            if (writer.paths.images_ts / f"{cid}_{len(files) - 1:04d}.nii.gz").is_file():  # the last file written
                writer.summary.skipped.append(cid)
                continue
        elif writer.is_done(cid, split):
            writer.skip(cid, split)
            continue
        if label is None and (split == "train" or test_labels):
            writer.summary.drop(f"{split}/{case}", "no label map")
            continue
        images = [read_image(f) for f in files]
        geometry = images[0][1]
        if label is not None:
            seg, seg_geom = read_image(label)
            if (diff := geometry.same_as(seg_geom)) is not None:
                writer.summary.drop(f"{split}/{case}", f"label grid differs from the image ({diff})")
                continue
            voxel_mm3 = float(np.prod(geometry.spacing))
            instances, classes, small = instances_from_semantic(np.asarray(seg), values, voxel_mm3, min_size_mm3,
                                                                connectivity)
            for value, volume in small:
                writer.summary.drop(f"{case} label {value} ({volume:.1f} mm3)", f"smaller than {min_size_mm3:g} mm3")
        else:
            instances, classes = np.zeros(geometry.shape, dtype=np.uint16), {}
        if split == "test" and not test_labels:
            _write_images_only(writer, cid, images)
            continue
        writer.write_case(cid, [a for a, _ in images], geometry, instances, classes, split)
    return writer.summary


def _label_file(folder: Path, case: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        f = folder / f"{case}{suffix}"
        if f.is_file():
            return f
    return None


def _dim(path: Path) -> int:
    from retinaunet.io import read_header

    return read_header(path)[0].dim


def _write_images_only(writer: TaskWriter, cid: str, images) -> None:
    from retinaunet.io import write_image

    for mod, (array, geometry) in enumerate(images):
        write_image(array, geometry, writer.paths.images_ts / f"{cid}_{mod:04d}.nii.gz")
    writer.summary.written.append(cid)
