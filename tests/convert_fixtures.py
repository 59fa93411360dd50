"""Sources in their real formats, made tiny: a LUNA16 download (.mhd scans with a rotated direction in
subset folders plus annotations.csv), an nnU-Net segmentation task, a folder of images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# 90 degrees about z: the array's x axis runs along world y, its y axis along world -x
ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def write_volume(array: np.ndarray, path: Path, spacing_xyz=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                 direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def make_luna(root: Path, n_subsets: int = 3, per_subset: int = 2, shape=(20, 40, 40), seed: int = 0) -> dict:
    """A LUNA16-like folder: subsetK/<uid>.mhd (+ .raw), annotations.csv and annotations_excluded.csv.

    Every scan has one bright sphere of diameter 8 mm (its annotation), odd scans a second one; scans
    have spacing (x, y, z) = (1.5, 1.5, 2.0) mm and a rotated direction. Returns {uid: [(centre, d)]}.
    """
    rng = np.random.default_rng(seed)
    nodules: dict[str, list] = {}
    rows = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    spacing = (1.5, 1.5, 2.0)
    origin = (30.0, -40.0, -100.0)
    image_tmp = sitk.Image([int(s) for s in reversed(shape)], sitk.sitkInt16)
    image_tmp.SetSpacing(spacing)
    image_tmp.SetOrigin(origin)
    image_tmp.SetDirection(ROTATED)
    for s in range(n_subsets):
        for k in range(per_subset):
            uid = f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{s}{k}{seed}"
            array = (rng.normal(-800, 30, size=shape)).astype(np.int16)
            nodules[uid] = []
            for j in range(1 + (k % 2)):
                idx = np.array([shape[0] // 2, 12 + 16 * j, 12 + 14 * j], dtype=float)
                centre = image_tmp.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx[::-1]))
                zz, yy, xx = np.indices(shape)
                world_d = np.sqrt(((zz - idx[0]) * 2.0) ** 2 + ((yy - idx[1]) * 1.5) ** 2 + ((xx - idx[2]) * 1.5) ** 2)
                array[world_d <= 4.0] = 100
                nodules[uid].append((centre, 8.0))
                rows.append(f"{uid},{centre[0]:.4f},{centre[1]:.4f},{centre[2]:.4f},8.0")
            write_volume(array, root / f"subset{s}" / f"{uid}.mhd", spacing, origin, ROTATED)
    rows.append("9.9.9,0,0,0,5.0")  # a scan that is not in the download
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    first = next(iter(nodules))
    (root / "annotations_excluded.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n"
                                                   f"{first},0,0,0,-1\n")
    return nodules


def make_nnunet_task(root: Path, n_train: int = 4, n_test: int = 1, v2: bool = False) -> Path:
    """An nnU-Net segmentation task: labels 1 (organ, one big blob) and 2 (lesions, two blobs + a speck)."""
    rng = np.random.default_rng(1)
    labels = {"background": 0, "organ": 1, "lesion": 2} if v2 else {"0": "background", "1": "organ", "2": "lesion"}
    info = {"name": "Seg", "labels": labels, ("channel_names" if v2 else "modality"): {"0": "CT"},
            "numTraining": n_train}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(info))
    shape = (16, 32, 32)
    for split, n in (("Tr", n_train), ("Ts", n_test)):
        for i in range(n):
            case = f"seg_{i:03d}" if split == "Tr" else f"segts_{i:03d}"
            seg = np.zeros(shape, dtype=np.uint8)
            seg[2:12, 2:14, 2:14] = 1
            seg[4:8, 20:26, 20:26] = 2
            seg[10:14, 20:24, 4:8] = 2
            seg[14, 30, 30] = 2  # one voxel: below a minimum size
            image = (rng.normal(0, 1, size=shape) + seg * 2).astype(np.float32)
            spacing = (0.8, 0.8, 2.5)
            write_volume(image, root / f"images{split}" / f"{case}_0000.nii.gz", spacing)
            if split == "Tr":
                write_volume(seg, root / f"labels{split}" / f"{case}.nii.gz", spacing)
    return root


def make_images(root: Path, cases=("a", "b", "c"), shape=(16, 32, 32), spacing_xyz=(1.0, 1.0, 2.0),
                origin=(0.0, 0.0, 0.0), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)) -> Path:
    rng = np.random.default_rng(2)
    for case in cases:
        write_volume(rng.normal(0, 1, size=shape).astype(np.float32), root / f"{case}_0000.nii.gz", spacing_xyz,
                     origin, direction)
    return root


def write_dicom_series(folder: Path, array: np.ndarray, series_uid: str, z_positions, pixel_spacing: float = 0.7,
                       origin_xy=(-180.0, -180.0), patient_id: str = "LIDC-IDRI-9999") -> Path:
    """A CT series as one .dcm file per slice (axial, ascending z) with the given SeriesInstanceUID."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    study = "1.2.826.0.1.3680043.2.1125.1." + str(abs(hash(series_uid)) % 10**12)
    thickness = float(np.median(np.diff(z_positions))) if len(z_positions) > 1 else 1.0
    for k, z in enumerate(z_positions):
        image = sitk.GetImageFromArray(array[k].astype(np.int16)[None])
        image.SetSpacing((pixel_spacing, pixel_spacing, thickness))
        tags = {
            "0008|0060": "CT", "0010|0020": patient_id, "0020|000d": study, "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1),
            "0020|0032": f"{origin_xy[0]}\\{origin_xy[1]}\\{z}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": str(thickness), "0028|1052": "0", "0028|1053": "1",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k + 1:06d}.dcm"))
        writer.Execute(image)
    return folder
