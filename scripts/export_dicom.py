"""Write every 3D image of a folder (``<case>_0000.nii.gz`` ...) as a DICOM CT series, one folder per case.

Example: the test images of a toy task as DICOM, then predicted from the DICOM folder:

    .venv/bin/python scripts/export_dicom.py $RUD_DATA/Task104_ToySpheres/raw_splitted/imagesTs dicom_in/

Each series gets a fresh SeriesInstanceUID (printed with its case, and saved as ``series.csv`` in the
output folder); the volume keeps its geometry exactly (see ``retinaunet/dicom_write.py``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from retinaunet.dicom_write import SeriesInfo, write_series
from retinaunet.io import read_image, strip_image_suffix


def export_folder(images: Path, out: Path) -> dict[str, str]:
    """{case: SeriesInstanceUID} of the series written for the ``<case>_0000`` images of ``images``."""
    from pydicom.uid import generate_uid

    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"export_dicom: {out} is not empty; choose a new folder")
    written = {}
    for path in sorted(images.iterdir()):
        stem = strip_image_suffix(path.name)
        if path.name.startswith(".") or stem == path.name or not stem.endswith("_0000"):
            continue
        case = stem[: -len("_0000")]
        array, geometry = read_image(path)
        if array.ndim != 3:
            print(f"export_dicom: {path}: not 3D, skipped", file=sys.stderr)
            continue
        uid = generate_uid()
        write_series(array, geometry, out / case, SeriesInfo(patient_id=case, series_uid=uid,
                                                             series_description=case))
        written[case] = uid
        print(f"{case}: {uid}")
    with open(out / "series.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "series_uid"])
        writer.writerows(written.items())
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", type=Path, help="folder of <case>_0000.nii.gz (or .nrrd, .mha ...) images")
    p.add_argument("output", type=Path, help="new folder for the DICOM series (one sub-folder per case)")
    args = p.parse_args(argv)
    export_folder(args.images, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
