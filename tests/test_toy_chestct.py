"""The chest CT cohort in LUNA16's format: files as the challenge ships them, annotations true to the image."""

from __future__ import annotations

import csv

import numpy as np
import SimpleITK as sitk

from retinaunet.convert.luna16 import convert_luna16
from retinaunet.io import read_image, read_label
from retinaunet.toy_chestct import ChestCTConfig, scan_geometry, write_chestct_cohort
from retinaunet.toy_cli import main as rud_example


def test_rud_example_chestct_writes_luna16_layout(tmp_path):
    out = tmp_path / "luna"
    assert rud_example(["chestct", "--num-scans", "3", "--subsets", "3", "--size", "40", "--slices", "12", "16",
                        "--out", str(out), "--quiet"]) == 0
    mhds = sorted(out.glob("subset*/*.mhd"))
    assert [p.parent.name for p in mhds].count("subset0") == 1 and len(mhds) == 3
    for mhd in mhds:
        assert mhd.with_suffix(".raw").is_file() and mhd.stem.count(".") >= 9  # a dotted seriesuid
        image = sitk.ReadImage(str(mhd))
        assert image.GetPixelID() == sitk.sitkInt16 and image.GetSize()[:2] == (40, 40)
        assert 12 <= image.GetSize()[2] <= 16
        array = sitk.GetArrayFromImage(image)
        assert array[:, 0, 0].max() in (-2000, -3024)  # padding outside the circular field of view
        assert (array > 0).any() and (array[array > -3000] < -900).any()  # tissue and air
    with open(out / "annotations.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(rows[0]) == {"seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"}
    assert {r["seriesuid"] for r in rows} <= {p.stem for p in mhds}
    assert (out / "annotations_excluded.csv").read_text().startswith("seriesuid,coordX,coordY,coordZ,diameter_mm")


def test_scan_geometry_is_clinical_at_full_size():
    cfg = ChestCTConfig()
    for i in range(50):
        shape, spacing, fov = scan_geometry(cfg, np.random.default_rng(i))
        assert shape[1:] == (512, 512) and 120 <= shape[0] <= 400
        assert 0.6 <= spacing[1] == spacing[2] <= 0.8 and 1.0 <= spacing[0] <= 2.5
        assert 300 <= shape[0] * spacing[0] <= 400  # a whole chest


def test_annotations_match_the_image_in_rotated_and_flipped_scans(tmp_path):
    cfg = ChestCTConfig(num_scans=4, subsets=4, size=64, slices=(30, 40), rotated_fraction=1.0, seed=3)
    source = write_chestct_cohort(tmp_path / "luna", cfg, progress=False)
    directions = {read_image(p)[1].direction for p in source.glob("subset*/*.mhd")}
    assert len(directions) == 2  # both the flipped and the 90-degree rotation occur
    summary = convert_luna16(source, tmp_path / "Task090_Chest", progress=False)
    assert summary.dropped == [] and len(summary.written) == 4
    labels = sorted((tmp_path / "Task090_Chest" / "raw_splitted" / "labelsTr").glob("*.nii.gz"))
    objects = 0
    for label in labels:
        image, _ = read_image(str(label).replace("labelsTr", "imagesTr").replace(".nii.gz", "_0000.nii.gz"))
        inst, classes = read_label(label)
        for i in classes:
            objects += 1
            inside = image[inst == i]
            assert np.median(inside) > -700, f"{label.name} object {i}: median {np.median(inside)} HU: lung or air"
    assert objects >= 4  # (part-solid nodules are ground glass of about -600 HU; lung is -850)
