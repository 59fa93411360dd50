"""The one prediction path: preprocessed case -> ensemble prediction -> post-processing steps -> export.

`rud_predict` (new images, preprocessed on the fly), the trainer's validation (this epoch's weights, no
export) and its test prediction (kept checkpoints, exported into the fold) all run their cases through a
:class:`PredictionRun`, so the consolidation, the plans' post-processing steps and the export options are
the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from retinaunet.inference.export import export_case, write_run_csv
from retinaunet.inference.postprocess import apply_steps, build_steps
from retinaunet.inference.predictor import CasePrediction, Predictor
from retinaunet.inference.raw import RawPrediction, consolidate_raw
from torch import nn

from retinaunet.plans import Plans

__all__ = ["PredictionRun"]


@dataclass
class PredictionRun:
    """Predicts preprocessed cases with ``models`` and writes them to ``out_dir`` (None: keep in memory).

    ``predictor_options`` go to :class:`~retinaunet.inference.predictor.Predictor` (mirror, consolidation, batch_size,
    keep_seg, keep_raw, member_rank, progress ...); ``save_seg`` / ``save_boxes`` are the export's NIfTI
    options. Consolidation and post-processing settings come from ``plans.inference`` (with a sweep's
    chosen values when the plans come from :meth:`~retinaunet.model_folder.ModelFolder.tuned_plans`).
    """

    models: Sequence[nn.Module]
    plans: Plans
    device: str | torch.device = "cpu"
    out_dir: str | os.PathLike | None = None
    save_seg: bool = False
    save_boxes: bool = False
    predictor_options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None  # added to every exported JSON
    save_instances: bool = False  # an instance map per case from the segmentation output

    def __post_init__(self) -> None:
        options = {"keep_seg": self.save_seg or self.save_instances, **self.predictor_options}
        self.predictor = Predictor(self.models, self.plans, device=self.device, **options)
        self.steps = build_steps(self.plans)
        self.written: list[Path] = []

    def case(self, data: np.ndarray, props: dict[str, Any]) -> CasePrediction:
        """Predict one preprocessed case (``data: [C, *S]``, its properties) and export it when writing."""
        if tuple(data.shape[1:]) != tuple(props.get("shape", data.shape[1:])):
            raise ValueError(f"{props.get('case')}: data shape {tuple(data.shape[1:])} differs from its json's "
                             f"{tuple(props['shape'])}; preprocess the case again")
        pred = self.predictor.predict_case(np.asarray(data), name=str(props.get("case", "case")))
        return self.complete(pred, props)

    def replay(self, raw: RawPrediction, props: dict[str, Any]) -> CasePrediction:
        """A case from its kept raw prediction (no network pass): consolidated with these plans' settings,
        post-processed and exported like :meth:`case`."""
        return self.complete(CasePrediction(*consolidate_raw(raw, self.plans.inference), raw=raw), props)

    def complete(self, pred: CasePrediction, props: dict[str, Any]) -> CasePrediction:
        """The post-processing steps on a consolidated prediction, and its export when writing."""
        pred = apply_steps(pred, self.steps, self.plans)
        if self.out_dir is not None:
            self.written.append(export_case(pred, props, self.out_dir, self.plans.class_names, self.save_seg,
                                            self.save_boxes, self.metadata, self.save_instances))
        return pred

    def finish(self) -> list[Path]:
        """Write the run's CSV over every prediction JSON of ``out_dir``; returns this run's JSON files."""
        if self.out_dir is not None:
            Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            write_run_csv(self.out_dir)
        return self.written
