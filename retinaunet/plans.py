"""The plans file: the one contract between stages.

``plans.json`` is a plain, human-editable dict; :class:`Plans` is a thin typed view over it so no stage
digs through raw keys. Every choice has a reason under ``reasons``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retinaunet.io import ReadError, read_json, write_json
from retinaunet.plan_values import plan_value_problems

REQUIRED_KEYS = ("mode", "dim", "patch_size", "batch_size", "num_classes", "in_channels", "network",
                 "anchors", "matching", "training", "inference")


class PlansError(RuntimeError):
    """A plans file that cannot be used; the message names the key and the fix."""


class Plans(dict):
    """A plans dict with typed read access. ``Plans(json.load(f))`` or :func:`load_plans`."""

    def _get(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise PlansError(f"plans have no '{key}': rerun rud_plan, or add the key") from None

    @property
    def task(self) -> str:
        return str(self.get("task", ""))

    @property
    def plan_name(self) -> str:
        return str(self.get("plan_name", self.mode))

    @property
    def mode(self) -> str:
        return str(self._get("mode"))

    @property
    def dim(self) -> int:
        """Spatial dims of the network (2 for 2d and 2dc)."""
        return int(self._get("dim"))

    @property
    def data_dim(self) -> int:
        """Spatial dims of the dataset's images."""
        return int(self.get("data_dim", self.dim))

    @property
    def patch_size(self) -> list[int]:
        return [int(p) for p in self._get("patch_size")]

    @property
    def batch_size(self) -> int:
        return int(self._get("batch_size"))

    @property
    def num_classes(self) -> int:
        return int(self._get("num_classes"))

    @property
    def class_names(self) -> list[str]:
        return list(self.get("class_names", [str(i) for i in range(self.num_classes)]))

    @property
    def in_channels(self) -> int:
        return int(self._get("in_channels"))

    @property
    def num_modalities(self) -> int:
        return len(self.get("modalities", {"0": ""}))

    @property
    def context_slices(self) -> int:
        return int(self.get("context_slices", 0))

    @property
    def target_spacing(self) -> list[float]:
        return [float(s) for s in self._get("target_spacing")]

    @property
    def network(self) -> dict[str, Any]:
        return self._get("network")

    @property
    def anchors(self) -> dict[str, Any]:
        return self._get("anchors")

    @property
    def matching(self) -> dict[str, Any]:
        return self._get("matching")

    @property
    def normalization(self) -> list[dict[str, Any]]:
        return self._get("normalization")

    @property
    def training(self) -> dict[str, Any]:
        return self._get("training")

    @property
    def inference(self) -> dict[str, Any]:
        return self._get("inference")

    def get_path(self, dotted: str) -> Any:
        """Value at a dotted key, e.g. ``plans.get_path("training.epochs")``."""
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise PlansError(f"plans have no key '{dotted}'")
            node = node[part]
        return node

    def override(self, dotted: str, value: Any) -> Plans:
        """Set a dotted key in place (``"training.epochs", 10``); the key must exist."""
        parts = dotted.split(".")
        node: Any = self
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise PlansError(f"plans have no key '{dotted}'; see plans.json for the keys")
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise PlansError(f"plans have no key '{dotted}'; see plans.json for the keys")
        node[parts[-1]] = value
        return self

    def copy(self) -> Plans:
        return Plans(copy.deepcopy(dict(self)))

    def validate(self) -> Plans:
        missing = [k for k in REQUIRED_KEYS if k not in self]
        if missing:
            raise PlansError(f"plans lack {', '.join(missing)}: rerun rud_plan")
        stride = cumulative_stride(self.network["strides"])
        bad = [p for p, s in zip(self.patch_size, stride) if p % s]
        if bad:
            raise PlansError(f"patch_size {self.patch_size} is not divisible by the network's stride {stride}; "
                             "choose multiples of it")
        return self


def parse_value(text: str) -> Any:
    """A command-line value: JSON where it parses (``3``, ``[1,2]``, ``true``), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(plans: Plans, overrides: Sequence[str]) -> Plans:
    """Apply ``key=value`` strings (dotted keys, JSON values) to plans in place."""
    for item in overrides:
        if "=" not in item:
            raise PlansError(f"override '{item}' must look like key=value, e.g. training.epochs=10")
        key, value = item.split("=", 1)
        plans.override(key.strip(), parse_value(value.strip()))
    if problems := plan_value_problems(plans):
        raise PlansError(f"--override: {problems[0]}")
    return plans


def cumulative_stride(strides: Sequence[Sequence[int]]) -> list[int]:
    """Total downsampling per axis of a list of per-stage strides."""
    total = [1] * len(strides[0])
    for s in strides:
        total = [t * int(x) for t, x in zip(total, s)]
    return total


def load_plans(path: str | os.PathLike) -> Plans:
    path = Path(path)
    if not path.exists():
        raise PlansError(f"{path} not found: run rud_plan for this task first")
    try:
        data = read_json(path)
    except ReadError as err:
        raise PlansError(str(err)) from None
    if problems := plan_value_problems(data):
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PlansError(f"{path}: {problems[0]}{more}; fix it or rerun rud_plan")
    return Plans(data)


def save_plans(plans: dict, path: str | os.PathLike) -> bool:
    """Write plans atomically; returns False (and writes nothing) when the file already holds them."""
    path = Path(path)
    if path.exists():
        try:
            if read_json(path) == json.loads(json.dumps(plans)):
                return False
        except Exception:  # noqa: BLE001 - an unreadable file is simply replaced
            pass
    write_json(dict(plans), path)
    return True


def make_test_plans(dim: int = 2, num_classes: int = 2, patch_size: Sequence[int] | None = None,
                    in_channels: int = 1, mode: str | None = None, **network: Any) -> Plans:
    """A tiny but complete plan for tests and examples (small ResNet, 32 FPN channels)."""
    mode = mode or ("3d" if dim == 3 else "2d")
    if patch_size is None:
        patch_size = [16, 64, 64] if dim == 3 else [64, 64]
    if dim == 3:
        strides = [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
        z_sizes = [1.0, 2.0, 4.0, 8.0]
    else:
        strides = [[2, 2]] * 5
        z_sizes = None
    net = {"start_channels": 8, "max_channels": 64, "fpn_channels": 32, "head_channels": 32, "head_convs": 2,
           "block": "basic", "blocks_per_stage": [1, 1, 1, 1], "strides": strides}
    net.update(network)
    return Plans({
        "task": "Task000_Test", "plan_name": mode, "mode": mode, "data_dim": 3 if mode == "2dc" else dim,
        "dim": dim, "modalities": {"0": "CT"}, "num_classes": num_classes,
        "class_names": [f"class{i}" for i in range(num_classes)],
        "target_spacing": [1.0] * (3 if mode == "2dc" else dim),
        "context_slices": 3 if mode == "2dc" else 0, "in_channels": in_channels,
        "patch_size": list(patch_size), "batch_size": 2, "network": net,
        "anchors": {"base_sizes": [4.0, 8.0, 16.0, 32.0], "z_base_sizes": z_sizes,
                    "scales": [1.0, 2 ** (1 / 3), 2 ** (2 / 3)], "ratios": [0.5, 1.0, 2.0], "coverage": 1.0},
        "matching": {"iou_low": 0.01 if dim == 3 else 0.1, "iou_high": 0.5},
        "normalization": [{"scheme": "zscore"}],
        "training": {"epochs": 2, "batches_per_epoch": 4, "learning_rate": 1e-4, "weight_decay": 1e-5,
                     "optimizer": "adam", "foreground_fraction": 0.5, "num_workers": 0, "seg_loss_weight": 1.0,
                     "val_interval": 1, "keep_best": 5, "hard_negative_pool": 20},
        "inference": {"pre_nms_top_k": 50000 if dim == 3 else 10000, "nms_iou": 0.1,
                      "max_detections": 30 if dim == 3 else 10, "min_score": 0.1, "tile_overlap": 0.5,
                      "mirror_axes": list(range(dim)), "wbc_iou": 1e-5},
        "reasons": {},
    })
