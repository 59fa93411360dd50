"""What a run writes for the people who read its findings, after its prediction JSONs exist.

- ``<case>.mrk.json`` beside each 3D case's JSON: 3D Slicer markups (:mod:`retinaunet.inference.markups`);
- ``report.html``: the run's report page (:mod:`retinaunet.inference.report_html`);
- with ``dicom``: ``<case>.seg.dcm`` and ``<case>.sr.dcm`` per case predicted from a DICOM series
  (:mod:`retinaunet.inference.dicom_export`).

All of them are made from the JSONs alone (plus the images for the thumbnails and the series' headers
for the DICOM objects), so they are rewritten whole when a run is continued or a shard ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from loguru import logger
from retinaunet.inference.dicom_input import PredictionInput
from retinaunet.inference.export import read_predictions
from retinaunet.inference.markups import write_case_markups
from retinaunet.inference.report_html import write_report

from retinaunet.io import IMAGE_SUFFIXES, strip_image_suffix

__all__ = ["input_cases", "input_image", "write_reader_outputs"]


def input_cases(folder: str | os.PathLike) -> list[str]:
    """The cases of an input folder: names of its ``<case>_0000.<image suffix>`` files."""
    cases = set()
    for path in Path(folder).iterdir():
        stem = strip_image_suffix(path.name) if path.name.lower().endswith(IMAGE_SUFFIXES) else ""
        if stem.endswith("_0000") and not path.name.startswith("."):
            cases.add(stem[: -len("_0000")])
    return sorted(cases)


def input_image(folder: str | os.PathLike, case: str) -> Path | None:
    """The first modality's file of ``case`` in an input folder (``<case>_0000.<any image suffix>``)."""
    for suffix in IMAGE_SUFFIXES:
        path = Path(folder) / f"{case}_0000{suffix}"
        if path.is_file():
            return path
    return None


def write_reader_outputs(out_dir: str | os.PathLike, inputs: PredictionInput, cases: Iterable[str],
                         operating_point: float = 0.5, dicom: bool = False, report: bool = True,
                         class_names: Sequence[str] | None = None) -> list[Path]:
    """Markups (and with ``dicom`` the SEG and SR) of ``cases``, and the report over every JSON of ``out_dir``."""
    out_dir = Path(out_dir)
    cases = set(cases)
    docs = [doc for doc in read_predictions(out_dir) if doc["case"] in cases]
    written = [write_case_markups(doc, out_dir) for doc in docs if len(doc["shape"]) == 3]
    if dicom:
        from retinaunet.inference.dicom_export import write_case_dicom

        for doc in docs:
            series = inputs.series.get(doc["case"])
            if series is None:
                continue
            written += write_case_dicom(doc, series, out_dir, operating_point, class_names)
    if report:
        written.append(write_report(out_dir, lambda case: input_image(inputs.folder, case), operating_point))
        logger.info(f"report: {written[-1]}")
    return written
