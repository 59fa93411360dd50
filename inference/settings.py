"""The inference settings of one prediction run: planned, tuned by a sweep, overridden for the run.

Every setting lives in the plans' typed ``inference`` section (:class:`retinaunet.plans.InferencePlan`, the
one set of defaults). A run takes the model folder's plans, puts a sweep's chosen values on top
(:meth:`~retinaunet.model_folder.ModelFolder.tuned_plans`), then the user's ``--override key=value``; it
records all of it under ``settings`` in every prediction JSON, so a result can be traced to its settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retinaunet.inference.postprocess import STANDARD_STEPS

from retinaunet.model_folder import ModelFolder
from retinaunet.plans import Plans, PlansError, parse_value

__all__ = ["apply_inference_overrides", "resolve_settings", "settings_difference", "settings_metadata"]

def apply_inference_overrides(plans: Plans, overrides: Sequence[str]) -> list[str]:
    """Apply ``key=value`` to the ``inference`` section (``inference.`` may be left out); returns the dotted
    keys set. Other sections cannot change at prediction time (the networks are trained with them).
    Setting a post-processing step's own key (``min_size``, ``min_score``, ``max_detections``) also switches
    that step on, in the standard order, when the plans' ``postprocess`` list lacks it."""
    done = []
    for item in overrides:
        if "=" not in item:
            raise PlansError(f"--override '{item}' must look like key=value, e.g. min_score=0.3")
        key, value = (part.strip() for part in item.split("=", 1))
        key = key if key.startswith("inference.") else f"inference.{key}"
        if key.count(".") != 1:
            raise PlansError(f"--override '{item}': only inference settings can change at prediction time")
        plans.override(key, parse_value(value))
        done.append(f"{key}={value}")
        steps = plans.inference.postprocess
        name = key.split(".", 1)[1]
        if name in STANDARD_STEPS and name not in steps and not any(d.startswith("inference.postprocess=")
                                                                   for d in done):
            standard = [s for s in STANDARD_STEPS if s in steps or s == name]
            plans.override("inference.postprocess", standard + [s for s in steps if s not in STANDARD_STEPS])
    return done


def resolve_settings(folder: ModelFolder, folds: Sequence[int] | None, overrides: Sequence[str] = (), *,
                     planned: bool = False, mirror: bool | None = None, consolidation: str | None = None
                     ) -> tuple[Plans, dict[str, Any]]:
    """The plans to predict with and the record of where their inference settings came from."""
    if planned:
        plans, source = folder.load_plans(), None
    else:
        plans, source = folder.tuned_plans(folds)
    done = apply_inference_overrides(plans, overrides)
    if mirror is not None:
        done += apply_inference_overrides(plans, [f"mirror={str(mirror).lower()}"])
    if consolidation is not None:
        done += apply_inference_overrides(plans, [f"consolidation={consolidation}"])
    record = {"model_folder": str(folder.path), "folds": None if folds is None else sorted(folds),
              "settings_from": str(source) if source else "plans (as planned)", "overrides": done}
    return plans, record


def settings_metadata(record: dict[str, Any], plans: Plans) -> dict[str, Any]:
    """The ``settings`` entry of every prediction JSON: the record and the full inference section used."""
    return {"settings": {**record, "inference": plans.to_dict()["inference"]}}


def settings_difference(written: Any, settings: dict[str, Any]) -> str | None:
    """How the ``settings`` entry of a prediction JSON (``written``) differs from a run's ``settings``
    (:func:`settings_metadata`'s entry): the model folder, the folds, then the first inference setting;
    None when the JSON could have come from this run."""
    if not isinstance(written, dict):
        return "no settings record (an older or foreign JSON)"
    old, new = written.get("model_folder"), settings["model_folder"]
    if old is None or Path(str(old)).resolve() != Path(str(new)).resolve():
        return f"model folder {old}, this run {new}"
    if written.get("folds") != settings["folds"]:
        return f"folds {written.get('folds')}, this run {settings['folds']}"
    now = json.loads(json.dumps(settings["inference"]))  # as a JSON holds it
    before = written.get("inference") if isinstance(written.get("inference"), dict) else {}
    for key in sorted(set(now) | set(before)):
        if before.get(key) != now.get(key):
            return f"inference.{key} {json.dumps(before.get(key))}, this run {json.dumps(now.get(key))}"
    return None
