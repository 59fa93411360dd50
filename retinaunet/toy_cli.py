"""``rud_example``: write one of the paper's toy tasks in the standard dataset layout."""

from __future__ import annotations

import argparse

from loguru import logger

from retinaunet.cli_errors import run_command
from retinaunet.layout import data_root
from retinaunet.toy import DEFAULT_NUMBERS, KINDS, Toy2DConfig, Toy3DConfig, write_toy_task
from retinaunet.toy_chestct import ChestCTConfig, write_chestct_cohort
from retinaunet.toy_nodules import NODULE_NUMBERS, NoduleConfig, write_nodule_task


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_example",
        description="Write a toy detection task (raw images, instance maps and their jsons, train and test "
                    "splits) into the data root, ready for rud_plan. The 2D kinds are the paper's toy "
                    "experiments; 'spheres' is a 3D task with anisotropic spacing; 'nodules' is a CT-scale "
                    "chest task with nodules of 3-30 mm; 'chestct' writes whole chest CT scans in LUNA16's own format "
                    "(not a task: convert it with rud_convert luna16).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("kind", choices=(*KINDS, "nodules", "chestct"),
                   help="shapes: filled circle vs circle with a hole cut from the mask; patterns: the same "
                        "images, hole kept in the mask; scales: circles of two radii; spheres: 3D filled vs "
                        "hollow spheres, 0-3 per volume, some volumes empty; nodules: cropped chest CT (60 x 90 x 90 "
                        "mm) with vessels, airways and chest wall, 1-3 nodules of 3-30 mm (log-uniform) per "
                        "volume, classes solid / part_solid / calcified; chestct: a cohort of whole chest CT scans "
                        "(512 x 512, 1-2.5 mm slices, 120-400 slices, body, table, lungs with vessels, nodules of "
                        "3-30 mm, padding outside the circular field of view) as subsetK/<seriesuid>.mhd/.raw with "
                        "annotations.csv and annotations_excluded.csv")
    p.add_argument("--num-train", type=int, default=None,
                   help="training images (default 1000 for 2D as in the paper, 40 for spheres, 32 for nodules)")
    p.add_argument("--num-test", type=int, default=None,
                   help="held-out test images (default 1000 for 2D, 20 for spheres, 24 for nodules)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    p.add_argument("--size", type=int, default=None,
                   help="2D image side in pixels (default 320); chestct: in-plane voxels per side (default 512; "
                        "smaller keeps the field of view and makes the voxels coarser, for quick checks)")
    p.add_argument("--num-scans", type=int, default=20, help="chestct: scans in the cohort")
    p.add_argument("--subsets", type=int, default=10,
                   help="chestct: subsetK folders the scans are dealt into (rud_convert luna16 makes one fold per "
                        "subset; 3 or more give a splits.json)")
    p.add_argument("--slices", type=int, nargs=2, default=(120, 400), metavar=("MIN", "MAX"),
                   help="chestct: slices per scan (fewer make the slices thicker: the scan keeps its length)")
    p.add_argument("--out", default=None,
                   help="chestct: the cohort's folder (default <data root>/LUNA16_chestct)")
    p.add_argument("--radius", type=float, default=20.0, help="2D circle radius in pixels (shapes, patterns)")
    p.add_argument("--sphere-scale", type=float, default=1.0,
                   help="spheres: scale the radii (6-9 mm) and the volumes' extent per axis by this factor (2: "
                        "radii of 12-18 mm in volumes twice as long per axis)")
    p.add_argument("--hole-radius", type=float, default=4.0, help="radius of the donut's hole (shapes, patterns)")
    p.add_argument("--scale-radii", type=float, nargs=2, default=(19.0, 20.0), metavar=("SMALL", "LARGE"),
                   help="radii of the two classes of the scales task")
    p.add_argument("--objects-per-image", type=int, default=1, help="objects per 2D image (paper: 1)")
    p.add_argument("--intensity", type=float, default=None,
                   help="object intensity added over background: 2D (default 0.2), spheres (default 800 HU over "
                        "-800)")
    p.add_argument("--noise", type=float, default=None,
                   help="noise on every pixel: 2D uniform in [0, NOISE) (default 1.0); spheres Gaussian with "
                        "standard deviation NOISE HU (default 150); lower intensity or more noise makes the task "
                        "harder")
    p.add_argument("--slice-thickness", type=float, default=1.25,
                   help="nodules: slice spacing in mm (in-plane 0.7 mm); 2.5 gives the thick-slice variant")
    p.add_argument("--task-number", type=int, default=None,
                   help="task number (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_NUMBERS.items())
                        + f", nodules {NODULE_NUMBERS[1.25]} or with 2.5 mm slices {NODULE_NUMBERS[2.5]})")
    p.add_argument("--task-name", default=None, help="task name after the number (default Toy<Kind>)")
    p.add_argument("--data-root", default=None, help="where to write the task (default $RUD_DATA)")
    p.add_argument("--force", action="store_true", help="replace an existing task folder of the same name")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("rud_example", lambda: write_example(args))


def write_example(args: argparse.Namespace) -> None:
    """Write the toy task the parsed arguments describe and print its folder."""
    if args.kind in ("nodules", "chestct") and (args.intensity is not None or args.noise is not None):
        raise ValueError(f"--intensity and --noise apply to the 2D kinds and spheres; {args.kind} has CT "
                         "densities of its own")
    if args.sphere_scale != 1.0 and args.kind != "spheres":
        raise ValueError(f"--sphere-scale applies to spheres only, not {args.kind}")
    if args.sphere_scale <= 0:
        raise ValueError(f"--sphere-scale must be above 0, got {args.sphere_scale:g}")
    if args.noise is not None and args.noise < 0:
        raise ValueError(f"--noise must be at least 0, got {args.noise:g}")
    if args.kind == "chestct":
        out = args.out or data_root(args.data_root) / "LUNA16_chestct"
        cfg = ChestCTConfig(num_scans=args.num_scans, subsets=min(args.subsets, args.num_scans),
                            size=512 if args.size is None else args.size, slices=tuple(args.slices), seed=args.seed)
        folder = write_chestct_cohort(out, cfg, args.force, not args.quiet)
        logger.info(f"wrote {folder} ({cfg.num_scans} scans in {cfg.subsets} subsets); next: "
                    f"rud_convert luna16 {folder} -t NUMBER")
        print(folder)
        return
    root = data_root(args.data_root, create=True)
    if args.kind == "nodules":
        if args.slice_thickness <= 0:
            raise ValueError("--slice-thickness must be positive")
        cfg = NoduleConfig(spacing=(args.slice_thickness, 0.7, 0.7), seed=args.seed)
        cfg.num_train = cfg.num_train if args.num_train is None else args.num_train
        cfg.num_test = cfg.num_test if args.num_test is None else args.num_test
    elif args.kind == "spheres":
        cfg = Toy3DConfig(seed=args.seed)
        f = args.sphere_scale
        cfg.radius_mm = (cfg.radius_mm[0] * f, cfg.radius_mm[1] * f)
        cfg.shape_min = tuple(int(round(s * f)) for s in cfg.shape_min)
        cfg.shape_max = tuple(int(round(s * f)) for s in cfg.shape_max)
        cfg.intensity = cfg.intensity if args.intensity is None else args.intensity
        cfg.noise = cfg.noise if args.noise is None else args.noise
        cfg.num_train = 40 if args.num_train is None else args.num_train
        cfg.num_test = 20 if args.num_test is None else args.num_test
    else:
        cfg = Toy2DConfig(kind=args.kind, size=320 if args.size is None else args.size, radius=args.radius,
                          hole_radius=args.hole_radius,
                          scale_radii=tuple(args.scale_radii), objects_per_image=args.objects_per_image,
                          intensity=Toy2DConfig.intensity if args.intensity is None else args.intensity,
                          noise=Toy2DConfig.noise if args.noise is None else args.noise, seed=args.seed,
                          num_train=1000 if args.num_train is None else args.num_train,
                          num_test=1000 if args.num_test is None else args.num_test)
    if cfg.num_train < 1 or cfg.num_test < 0:
        raise ValueError("--num-train must be at least 1 and --num-test at least 0")
    if args.kind == "nodules":
        task_dir = write_nodule_task(root, cfg, args.task_number, args.task_name, args.force, not args.quiet)
    else:
        task_dir = write_toy_task(args.kind, root, args.task_number, args.task_name, cfg, force=args.force,
                                  progress=not args.quiet)
    logger.info(f"wrote {task_dir} ({cfg.num_train} train, {cfg.num_test} test)")
    print(task_dir)
