from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from retinaunet.dataset import list_cases, load_dataset_info, validate_dataset
from retinaunet.io import read_image, read_label
from retinaunet.toy import Toy2DConfig, Toy3DConfig, make_toy_2d, make_toy_3d, write_toy_task
from retinaunet.toy_cli import main as rud_example


@pytest.mark.parametrize("kind", ["shapes", "patterns", "scales"])
def test_2d_object_counts_classes_and_masks(kind):
    cfg = Toy2DConfig(kind=kind, objects_per_image=2, num_train=1, num_test=0)
    seen = set()
    for i in range(12):
        image, inst, instances = make_toy_2d(cfg, "train", i)
        assert image.shape == (320, 320) and image.dtype == np.float32
        assert sorted(instances) == [1, 2] and set(np.unique(inst)) == {0, 1, 2}
        for obj, cls in instances.items():
            seen.add(cls)
            mask = inst == obj
            area = mask.sum()
            r = cfg.scale_radii[cls] if kind == "scales" else cfg.radius
            disk_area = np.pi * r * r
            hole = np.pi * cfg.hole_radius ** 2
            if kind == "shapes" and cls == 1:
                assert abs(area - (disk_area - hole)) < 0.05 * disk_area
                assert ndimage.label(~mask[mask.any(1)][:, mask.any(0)])[1] >= 2, "the hole is cut from the mask"
            else:
                assert abs(area - disk_area) < 0.05 * disk_area
        # noise is uniform in [0, 1); objects add 0.2 where painted
        assert image.min() >= 0.0 and image.max() < 1.2 + 1e-6
    assert seen == {0, 1}


def test_2d_image_matches_mask():
    """Without noise the image is exactly 0.2 on painted pixels: the mask of shapes equals the painted area."""
    for kind in ("shapes", "patterns"):
        cfg = Toy2DConfig(kind=kind, noise=0.0)
        for i in range(6):
            image, inst, instances = make_toy_2d(cfg, "train", i)
            painted = image > 0.1
            if kind == "shapes" or instances[1] == 0:
                np.testing.assert_array_equal(painted, inst > 0)
            else:  # patterns: donut's hole stays in the mask but is not painted
                assert (inst > 0).sum() - painted.sum() == pytest.approx(np.pi * 16, rel=0.3)


def test_2d_deterministic_and_seed_dependent():
    a = make_toy_2d(Toy2DConfig(seed=3), "train", 5)
    b = make_toy_2d(Toy2DConfig(seed=3), "train", 5)
    c = make_toy_2d(Toy2DConfig(seed=4), "train", 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    t = make_toy_2d(Toy2DConfig(seed=3), "test", 5)
    assert not np.array_equal(a[0], t[0]), "train and test images differ"


def test_3d_volumes():
    cfg = Toy3DConfig()
    shapes, counts, classes = set(), [], set()
    for i in range(20):
        image, inst, instances, geom = make_toy_3d(cfg, "train", i)
        assert image.shape == inst.shape == geom.shape
        assert geom.spacing == (2.5, 0.8, 0.8) and geom.origin != (0.0, 0.0, 0.0)
        shapes.add(image.shape)
        counts.append(len(instances))
        classes.update(instances.values())
        assert set(np.unique(inst)) - {0} == set(instances)
        for obj, cls in instances.items():
            mask = inst == obj
            assert image[mask].mean() > -300 > image[inst == 0].mean()  # objects are brighter
            zc = ndimage.center_of_mass(mask)
            filled_centre = mask[tuple(int(round(c)) for c in zc)]
            assert filled_centre == (cls == 0), "hollow spheres have an empty centre"
    assert len(shapes) > 1, "volume shapes vary"
    assert 0 in counts and max(counts) >= 2, "some volumes are empty, some hold several objects"
    assert classes == {0, 1}


def test_written_tasks_pass_validation(data_root):
    t2 = write_toy_task("shapes", data_root, config=Toy2DConfig(num_train=6, num_test=3), progress=False)
    t3 = write_toy_task("spheres", data_root, config=Toy3DConfig(num_train=4, num_test=2), progress=False)
    for t in (t2, t3):
        assert validate_dataset(t, progress=False) == []
    assert load_dataset_info(t2).dim == 2 and load_dataset_info(t3).dim == 3
    cases = list_cases(t2)
    assert len(cases) == 6 and len(list_cases(t2, "test")) == 3
    image, _ = read_image(cases[0].images[0])
    inst, mapping = read_label(cases[0].label)
    assert image.shape == (320, 320) and len(mapping) == 1 and set(np.unique(inst)) == {0, 1}
    with pytest.raises(FileExistsError, match="--force"):
        write_toy_task("shapes", data_root, progress=False)


def test_cli(data_root, capsys):
    assert rud_example(["patterns", "--num-train", "3", "--num-test", "1", "--size", "96", "--radius", "10",
                        "--task-number", "7", "--quiet"]) == 0
    task = data_root / "Task007_ToyPatterns"
    assert validate_dataset(task, progress=False) == []
    image, _ = read_image(task / "raw_splitted/imagesTr/case_0000_0000.nii.gz")
    assert image.shape == (96, 96)
    assert rud_example(["patterns", "--task-number", "7", "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_cli_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        rud_example(["--help"])
    out = capsys.readouterr().out
    for opt in ("--num-train", "--num-test", "--seed", "--size", "--radius", "--hole-radius", "--scale-radii",
                "--objects-per-image", "--intensity", "--noise", "--sphere-scale", "--task-number", "--task-name",
                "--data-root", "--force"):
        assert opt in out


def test_cli_spheres_contrast(data_root, capsys):
    """--intensity and --noise set the spheres' contrast: without noise the objects are exactly background plus
    the intensity; the nodules refuse them in one line."""
    assert rud_example(["spheres", "--num-train", "2", "--num-test", "0", "--intensity", "300", "--noise", "0",
                        "--task-number", "9", "--quiet"]) == 0
    task = data_root / "Task009_ToySpheres"
    assert validate_dataset(task, progress=False) == []
    values = set()
    for case in list_cases(task):
        image, _ = read_image(case.images[0])
        inst, _ = read_label(case.label)
        values.update(np.unique(image[inst > 0]).tolist())
        assert set(np.unique(image[inst == 0]).tolist()) == {-800.0}
    assert values == {-500.0}, "objects are background + 300 with no noise"
    assert rud_example(["nodules", "--noise", "10", "--task-number", "8", "--quiet"]) == 1
    assert "--intensity and --noise apply to" in capsys.readouterr().err
    assert rud_example(["chestct", "--intensity", "10", "--num-scans", "1", "--quiet"]) == 1
    assert "chestct has CT densities" in capsys.readouterr().err
    assert rud_example(["spheres", "--noise", "-1", "--task-number", "10", "--quiet"]) == 1
    assert "--noise must be at least 0" in capsys.readouterr().err


def test_cli_sphere_scale_grows_the_spheres_and_their_volumes(data_root, capsys):
    """--sphere-scale 2: the same cases with spheres twice the radius in volumes twice as long per axis; other
    kinds and a scale of 0 are refused in one line."""
    sizes = {}
    for scale, number in (("1", "11"), ("2", "12")):
        assert rud_example(["spheres", "--num-train", "4", "--num-test", "0", "--noise", "0", "--sphere-scale", scale,
                            "--task-number", number, "--quiet"]) == 0
        task = next(data_root.glob(f"Task0{number}_*"))
        assert validate_dataset(task, progress=False) == []
        shapes, voxels = [], []
        for case in list_cases(task):
            inst, _ = read_label(case.label)
            shapes.append(inst.shape)
            voxels += [int((inst == i).sum()) for i in np.unique(inst) if i > 0]
        sizes[scale] = (np.asarray(shapes), np.asarray(voxels))
    assert np.all(np.abs(sizes["2"][0] - 2 * sizes["1"][0]) <= 1)
    assert len(sizes["2"][1]) and 5.0 < np.median(sizes["2"][1]) / np.median(sizes["1"][1]) < 11.0  # ~2^3 the voxels
    assert rud_example(["nodules", "--sphere-scale", "2", "--task-number", "13", "--quiet"]) == 1
    assert "--sphere-scale applies to spheres only" in capsys.readouterr().err
    assert rud_example(["spheres", "--sphere-scale", "0", "--task-number", "14", "--quiet"]) == 1
    assert "--sphere-scale must be above 0" in capsys.readouterr().err
