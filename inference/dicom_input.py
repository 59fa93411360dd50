"""DICOM series as the input of ``rud_predict``: every series below the folder becomes one case.

The series are found and checked by :func:`retinaunet.dicom_series.find_series`; each readable one is
written as ``<case>_0000.mha`` into a temporary folder outside the input and the output (the input is
only read), and predicted from there like any image folder. The case id is the SeriesInstanceUID made
valid for file names (dots -> ``_``); the uid itself is every output's ``source_name``. A refused series
gets one line (naming it, its folder and the fix) and no output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger
from tqdm import tqdm

from retinaunet.convert.writer import case_id
from retinaunet.dicom_series import DicomError, DicomSeries, find_series, is_dicom_folder
from retinaunet.io import write_image, write_json
from retinaunet.layout import CASE_NAMES

__all__ = ["DicomInputError", "PredictionInput", "prepare_input"]


class DicomInputError(RuntimeError):
    """No series of a DICOM folder can be predicted; ``refused`` holds the line of each refused series
    (each was logged as it was found)."""

    def __init__(self, message: str, refused: list[str]):
        super().__init__(message)
        self.refused = refused


@dataclass
class PredictionInput:
    """The folder ``rud_predict`` reads images from, and for DICOM input the series behind each case."""

    folder: Path
    series: dict[str, DicomSeries] = field(default_factory=dict)  # case id -> its series
    refused: list[str] = field(default_factory=list)

    @property
    def is_dicom(self) -> bool:
        return bool(self.series)

    @property
    def source_names(self) -> dict[str, str]:
        """{case id: SeriesInstanceUID}."""
        return {case: s.uid for case, s in self.series.items()}


@contextlib.contextmanager
def prepare_input(input_dir: str | os.PathLike, num_modalities: int = 1, progress: bool = True
                  ) -> Iterator[PredictionInput]:
    """The input of a run: an image folder as it is, or a DICOM folder's series staged as images for the
    duration of the block (then removed). Raises :class:`DicomInputError` when no series is readable."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir() or not is_dicom_folder(input_dir):
        yield PredictionInput(input_dir)
        return
    if num_modalities != 1:
        raise ValueError(f"{input_dir}: DICOM input gives one series per case, but the model takes {num_modalities} "
                         "modalities; convert the series to <case>_0000 ... files first")
    scan = find_series(input_dir)
    for line in scan.refused:
        logger.error(f"refused: {line}")
    with tempfile.TemporaryDirectory(prefix="rud_dicom_") as tmp:
        staged = PredictionInput(Path(tmp), refused=list(scan.refused))
        taken: set[str] = set()
        for series in tqdm(scan.series, desc="reading DICOM series", unit="series", disable=not progress):
            case = case_id(series.uid, taken)
            try:
                volume = series.read()
            except DicomError as err:
                logger.error(f"refused: {err}")
                staged.refused.append(str(err))
                continue
            write_image(volume, series.geometry, staged.folder / f"{case}_0000.mha")
            staged.series[case] = series
        if not staged.series:
            raise DicomInputError(f"{input_dir}: no DICOM series can be predicted ({len(staged.refused)} refused, "
                                  "listed above)",
                                  staged.refused)
        write_json(staged.source_names, staged.folder / CASE_NAMES)  # rud_predict's source_name of each case
        logger.info(f"{input_dir}: {len(staged.series)} DICOM series to predict"
                    + (f", {len(staged.refused)} refused (listed above)" if staged.refused else ""))
        yield staged
