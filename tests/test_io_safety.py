"""Reading refuses incomplete or NaN NIfTI voxels and wrapping label ids; writing cannot be redirected."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk
from retinaunet.inference.export import write_run_csv

from retinaunet.io import Geometry, ReadError, read_image, read_label, write_image, write_json

GEOM3 = Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), (8, 16, 16))


def _write(tmp_path, array, name="img.nii.gz", geom=GEOM3):
    path = tmp_path / name
    image = sitk.GetImageFromArray(array)
    geom.apply_to(image)
    sitk.WriteImage(image, str(path), True)
    return path


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_truncated_gzip_is_an_error_not_zeros(tmp_path, rng, dtype):
    path = _write(tmp_path, (rng.normal(size=GEOM3.shape) * 100).astype(dtype))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ReadError, match="cut short|incomplete") as err:
        read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_short_voxel_data_in_a_complete_gzip_stream(tmp_path, rng):
    path = _write(tmp_path, rng.normal(size=GEOM3.shape).astype(np.float32))
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) - 1000]))
    with pytest.raises(ReadError, match="of the .* bytes of voxel data"):
        read_image(path)


@pytest.mark.parametrize("name", ["img.nii.gz", "img.nii"])
def test_nan_stored_in_nifti_is_reported(tmp_path, rng, name):
    array = rng.normal(size=GEOM3.shape).astype(np.float32)
    array[3, 4, 5] = np.nan
    array[1, 1, 1] = np.inf
    path = _write(tmp_path, array, name)
    with pytest.raises(ReadError, match="2 NaN/inf voxels"):
        read_image(path)


def test_intact_files_still_read(tmp_path, rng):
    array = rng.normal(size=GEOM3.shape).astype(np.float64)
    back, _ = read_image(_write(tmp_path, array))
    np.testing.assert_array_equal(back, array)
    two = Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (5, 7))
    back, _ = read_image(_write(tmp_path, np.arange(35, dtype=np.uint8).reshape(5, 7), "b.nii", two))
    assert back.sum() == np.arange(35).sum()


@pytest.mark.parametrize("big", [3_000_000_000, 2**32 + 1])
def test_label_ids_beyond_int32_keep_their_objects_and_classes(tmp_path, big):
    dtype = np.uint32 if big < 2**32 else np.int64
    inst = np.zeros(GEOM3.shape, dtype=dtype)
    inst[1:3, 2:5, 2:5] = 1
    inst[4:6, 8:12, 8:12] = big
    path = _write(tmp_path, inst, "lab.nii.gz")
    (tmp_path / "lab.json").write_text(json.dumps({"instances": {"1": 0, str(big): 1}}))
    array, mapping = read_label(path)
    assert array.dtype == np.int32
    ids = sorted(int(i) for i in np.unique(array) if i)
    assert len(ids) == 2 and sorted(mapping.values()) == [0, 1]
    assert mapping[int(array[5, 9, 9])] == 1 and mapping[int(array[2, 3, 3])] == 0
    assert (array == array[5, 9, 9]).sum() == 2 * 4 * 4


def test_label_memory_does_not_grow_with_the_id(tmp_path):
    from retinaunet.planning.fingerprint import fingerprint_case

    from retinaunet.dataset import Case

    two = Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (48, 48))
    image = _write(tmp_path, np.ones((48, 48), np.float32), "c_0000.nii.gz", two)
    inst = np.zeros((48, 48), np.int32)
    inst[10:20, 10:20] = 50_000_000
    label = _write(tmp_path, inst, "c.nii.gz", two)
    (tmp_path / "c.json").write_text(json.dumps({"instances": {"50000000": 1}}))
    tracemalloc.start()
    fp = fingerprint_case(Case("c", [image], label, tmp_path / "c.json"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert fp["num_objects"] == 1 and fp["objects"][0]["class"] == 1
    assert peak < 20_000_000, f"peak {peak / 1e6:.0f} MB for a 48 x 48 map"


def test_negative_label_ids_are_an_error(tmp_path):
    inst = np.zeros(GEOM3.shape, np.int16)
    inst[1, 1, 1] = -3
    path = _write(tmp_path, inst, "neg.nii.gz")
    (tmp_path / "neg.json").write_text(json.dumps({"instances": {"-3": 0}}))
    with pytest.raises(ReadError, match="negative"):
        read_label(path)


def test_planted_symlink_at_the_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for pid in {os.getpid(), os.getpid() + 1}:  # the names a predictable scheme would use
        (out / f".case.json.tmp{pid}.json").symlink_to(victim)
    write_json({"case": "case", "boxes": []}, out / "case.json")
    write_image(np.zeros((4, 4), np.uint8), None, out / "case_seg.nii.gz")
    assert victim.read_text() == "precious"
    assert json.loads((out / "case.json").read_text())["case"] == "case"
    assert not [p for p in out.iterdir() if ".part-" in p.name], "temporary files are renamed or removed"
    assert oct((out / "case.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_csv_reads_only_finished_prediction_files(tmp_path):
    doc = {"case": "a", "shape": [4, 4], "boxes": [{"box": [0, 0, 2, 2], "score": 0.9, "class": 0,
                                                     "class_name": "x", "center_world": [1.0, 1.0],
                                                     "size_mm": [2.0, 2.0]}]}
    write_json(doc, tmp_path / "a.json")
    (tmp_path / ".a.json.part-k2j4hx.json").write_text(json.dumps(doc))  # another writer's copy in progress
    (tmp_path / ".b.json.part-9q8wzz.json").write_text('{"case": "b", "bo')  # half written
    rows = (write_run_csv(tmp_path)).read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("a,")
