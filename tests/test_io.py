from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from retinaunet.io import Geometry, ReadError, read_case, read_image, read_json, read_label, write_image, write_json

ODD_DIRECTION = tuple(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]).ravel())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry_exactly(tmp_path, suffix, rng):
    geom = Geometry(spacing=(2.5, 0.7, 0.8), origin=(-10.25, 33.5, 100.0), direction=ODD_DIRECTION,
                    shape=(5, 6, 7))
    array = rng.normal(size=geom.shape).astype(np.float32)
    path = write_image(array, geom, tmp_path / f"img{suffix}")
    back, g2 = read_image(path)
    np.testing.assert_array_equal(back, array)
    if suffix == ".nii.gz":  # NIfTI stores geometry in float32: equal at that precision
        for name in ("spacing", "origin", "direction"):
            f32 = np.asarray(getattr(geom, name), dtype=np.float32)
            np.testing.assert_array_equal(np.asarray(getattr(g2, name), dtype=np.float32), f32)
        assert g2.shape == geom.shape
    else:
        assert g2 == geom
    assert not list(tmp_path.glob(".*tmp*")), "temporary files must be renamed into place"


def test_2d_round_trip(tmp_path):
    geom = Geometry((0.5, 0.25), (1.0, 2.0), (1.0, 0.0, 0.0, 1.0), (4, 3))
    array = np.arange(12, dtype=np.int16).reshape(4, 3)
    back, g2 = read_image(write_image(array, geom, tmp_path / "a.nii.gz"))
    assert back.dtype == np.int16 and g2 == geom and back.shape == (4, 3)


def test_index_to_world_matches_simpleitk(rng):
    geom = Geometry((2.5, 0.7, 0.8), (-10.25, 33.5, 100.0), ODD_DIRECTION, (5, 6, 7))
    image = geom.apply_to(sitk.Image(7, 6, 5, sitk.sitkFloat32))
    idx = np.array([1.5, 2.0, 3.25])  # array order z, y, x
    expected = image.TransformContinuousIndexToPhysicalPoint(tuple(idx[::-1]))
    np.testing.assert_allclose(geom.index_to_world(idx), expected, atol=1e-9)
    np.testing.assert_allclose(geom.world_to_index(expected), idx, atol=1e-9)
    pts = rng.uniform(0, 5, size=(10, 3))
    np.testing.assert_allclose(geom.world_to_index(geom.index_to_world(pts)), pts, atol=1e-9)
    assert Geometry.from_dict(geom.to_dict()) == geom


def test_read_case_stacks_modalities_and_rejects_other_grids(tmp_path):
    g = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), (2, 3, 4))
    a = write_image(np.zeros(g.shape, np.int16), g, tmp_path / "c_0000.nii.gz")
    b = write_image(np.ones(g.shape, np.float32), g, tmp_path / "c_0001.nii.gz")
    data, geom = read_case([a, b])
    assert data.shape == (2, 2, 3, 4) and data.dtype == np.float32 and geom == g
    other = Geometry((1.0, 1.0, 2.0), g.origin, g.direction, g.shape)
    c = write_image(np.ones(g.shape, np.float32), other, tmp_path / "c_0002.nii.gz")
    with pytest.raises(ReadError, match="c_0002.nii.gz: spacing"):
        read_case([a, c])


def test_read_label_and_json(tmp_path):
    g = Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (4, 4))
    inst = np.zeros((4, 4), np.uint8)
    inst[1:3, 1:3] = 2
    write_image(inst, g, tmp_path / "x.nii.gz")
    write_json({"instances": {"2": 1}}, tmp_path / "x.json")
    arr, mapping = read_label(tmp_path / "x.nii.gz")
    assert arr.dtype == np.int32 and mapping == {2: 1} and arr.sum() == 8
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ReadError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(ReadError, match="file not found"):
        read_image(tmp_path / "missing.nii.gz")
