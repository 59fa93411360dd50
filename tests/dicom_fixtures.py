"""Small DICOM series and a tiny 3D model folder for the DICOM tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retinaunet.io import Geometry, write_image
from retinaunet.plans import make_test_plans

pytest.importorskip("pydicom", reason="the 'dicom' extra is not installed (pip install -e '.[dicom]')")
pytest.importorskip("highdicom", reason="the 'dicom' extra is not installed (pip install -e '.[dicom]')")

ANGLE = 0.3
ROTATED = (np.cos(ANGLE), -np.sin(ANGLE), 0.0, np.sin(ANGLE), np.cos(ANGLE), 0.0, 0.0, 0.0, 1.0)


def toy_volume(shape=(16, 40, 44), seed=0) -> np.ndarray:
    """An integer CT-like volume (air, body, two bright blobs), exact in int16 DICOM."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    vol = np.full(shape, -1000.0)
    vol[(y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (shape[1] / 2.2) ** 2] = 40.0
    for cz, cy, cx, r in ((5, 12, 14, 3), (10, 26, 30, 4)):
        vol[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = 300.0
    return np.round(vol + rng.normal(0, 10, shape))


def toy_geometry(shape=(16, 40, 44)) -> Geometry:
    return Geometry(spacing=(1.0, 1.0, 1.0), origin=(-21.5, 13.25, -140.0), direction=ROTATED, shape=shape)


def write_dicom_case(folder: Path, volume=None, geometry=None, **info):
    from retinaunet.dicom_write import SeriesInfo, write_series

    volume = toy_volume() if volume is None else volume
    geometry = toy_geometry(volume.shape) if geometry is None else geometry
    info = SeriesInfo(**info)
    return write_series(volume, geometry, folder, info)


def write_nifti_case(path: Path, volume=None, geometry=None) -> Path:
    volume = toy_volume() if volume is None else volume
    geometry = toy_geometry(volume.shape) if geometry is None else geometry
    return write_image(volume.astype(np.float32), geometry, path)


def make_task_with_model(root: Path) -> Path:
    """Task000_Test with a tiny randomly initialised 3D Retina U-Net (two folds) and its plans.json."""
    from tests.test_predict_cli import make_model_folder

    plans = make_test_plans(dim=3, num_classes=2, patch_size=[16, 32, 32])
    task = root / "Task000_Test"
    make_model_folder(task, plans)
    (task / "plans.json").write_text(json.dumps(plans.to_dict()))
    return task
