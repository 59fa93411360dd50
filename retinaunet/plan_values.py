"""Checks of the values in a plans file, so a hand edit gives one line naming the key, not garbage.

Kept apart from :mod:`retinaunet.plans` as one plain function over the raw dict: it reads no files
and raises nothing, so any loader (or a typed schema) can call it and word the error its own way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from retinaunet.layout import NAME_PATTERN

MODES = {"2d": 2, "2dc": 2, "3d": 3}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v > 0


def _positive_number(v: Any) -> bool:
    return _is_number(v) and v > 0


def _list_of(check: Callable[[Any], bool], length: int | None = None) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and (length is None or len(v) == length) and all(map(check, v))
    return ok


def plan_value_problems(plans: Mapping[str, Any]) -> list[str]:
    """One line per invalid value of a plans dict (empty when every checked value is usable).

    Checks types and ranges of what the stages read; a missing key is left to the reader, which names it.
    """
    if not isinstance(plans, Mapping):
        return ["the file must hold a JSON object (the plans dict)"]
    problems: list[str] = []

    def check(key: str, ok: Callable[[Any], bool], want: str) -> None:
        node: Any = plans
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return
            node = node[part]
        if not ok(node):
            problems.append(f"'{key}' must be {want}, got {node!r}")

    check("mode", lambda v: v in MODES, "one of 2d, 2dc, 3d")
    check("plan_name", lambda v: isinstance(v, str) and bool(NAME_PATTERN.match(v)) and ".." not in v,
          "a plain name (letters, digits, '_', '-', '.'), no path")
    check("dim", lambda v: v in (2, 3) and _is_int(v), "2 or 3")
    if plans.get("mode") in MODES and _is_int(plans.get("dim")) and MODES[plans["mode"]] != plans["dim"]:
        problems.append(f"'dim' {plans['dim']} does not fit 'mode' {plans['mode']} (needs {MODES[plans['mode']]})")
    dim = plans.get("dim") if plans.get("dim") in (2, 3) else None
    check("patch_size", _list_of(_positive_int, dim), f"a list of {dim or 'dim'} positive integers")
    check("batch_size", _positive_int, "a positive integer")
    check("num_classes", _positive_int, "a positive integer")
    check("in_channels", _positive_int, "a positive integer")
    check("target_spacing", _list_of(_positive_number), "a list of positive numbers (mm)")
    check("network", lambda v: isinstance(v, Mapping), "a mapping")
    check("network.strides", _list_of(_list_of(_positive_int, dim)), "a list of per-axis positive integer strides")
    check("anchors", lambda v: isinstance(v, Mapping), "a mapping")
    check("anchors.base_sizes", _list_of(_positive_number), "a list of positive numbers")
    check("anchors.scales", _list_of(_positive_number), "a list of positive numbers")
    check("anchors.ratios", _list_of(_positive_number), "a list of positive numbers")
    check("matching", lambda v: isinstance(v, Mapping), "a mapping")
    check("training", lambda v: isinstance(v, Mapping), "a mapping")
    check("training.epochs", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    check("training.batches_per_epoch", _positive_int, "a positive integer")
    check("training.learning_rate", _positive_number, "a positive number")
    check("training.num_workers", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    check("inference", lambda v: isinstance(v, Mapping), "a mapping")
    check("inference.max_detections", _positive_int, "a positive integer")
    check("inference.min_score", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
    check("inference.nms_iou", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]")
    return problems
