"""The plans file: the one contract between stages, as a typed schema.

``plans.json`` stays a plain, human-editable JSON file. :class:`Plans` is its typed form: top-level entries
plus one dataclass per section (:class:`NetworkPlan`, :class:`AnchorsPlan`, :class:`MatchingPlan`,
:class:`TrainingPlan`, :class:`InferencePlan`). Every key has exactly one default, here; every stage reads
``plans.training.epochs`` and never digs into a raw dict. Loading validates every value and fails with one
line naming the key and the fix, e.g. ``plans.json: training.epochs must be a positive integer, got -3``.
Every choice of the planner keeps its reason under ``reasons``.

Adding a key: add a field (with its default and, for numbers, a ``_positive``/``_fraction`` check) to the
section's dataclass; the JSON reader, the writer, ``--override`` and the error messages follow from it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from retinaunet.io import ReadError, read_json, write_json
from retinaunet.layout import LayoutError, check_name

__all__ = ["Plans", "PlansError", "NetworkPlan", "AnchorsPlan", "MatchingPlan", "TrainingPlan", "InferencePlan",
           "CropPlan", "load_plans", "save_plans", "save_task_plans", "plan_names", "apply_overrides", "parse_value",
           "cumulative_stride", "make_test_plans"]

# keys older planners wrote that nothing reads any more: dropped on load with a warning
RETIRED_KEYS = frozenset({"training.optimizer"})


class PlansError(RuntimeError):
    """A plans file that cannot be used; the message names the key and the fix."""


# ----------------------------------------------------------------------------------------------- checks
def _positive(**kw: Any) -> Any:
    return field(metadata={"check": "positive"}, **kw)


def _non_negative(**kw: Any) -> Any:
    return field(metadata={"check": "non-negative"}, **kw)


def _fraction(**kw: Any) -> Any:
    return field(metadata={"check": "fraction"}, **kw)


def _choice(*options: str, **kw: Any) -> Any:
    return field(metadata={"choices": options}, **kw)


_NOUN = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " or null"
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_describe(inner).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "an object"
    return _NOUN.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """``value`` as type ``tp`` (ints accepted for floats), or PlansError naming ``key``."""
    origin = typing.get_origin(tp)
    bad = PlansError(f"{source}: {key} must be {_describe(tp)}, got {json.dumps(value)}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except PlansError:
                continue
        raise bad
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, inner, key, source) for v in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported plans type {tp}")  # a programming error in this module


def _numbers(value: Any) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [] if value is None else [value]


def _check(value: Any, f: dataclasses.Field, key: str, source: str) -> None:
    check, choices = f.metadata.get("check"), f.metadata.get("choices")
    if choices and value not in choices:
        raise PlansError(f"{source}: {key} must be one of {', '.join(map(str, choices))}, got {json.dumps(value)}")
    tests = {"positive": lambda x: x > 0, "non-negative": lambda x: x >= 0, "fraction": lambda x: 0 <= x <= 1}
    if check and not all(tests[check](x) for x in _numbers(value)):
        adjective = "between 0 and 1" if check == "fraction" else check
        if isinstance(value, list):
            what = f"a list of {adjective} numbers" if check != "fraction" else f"a list of numbers {adjective}"
        elif check == "fraction":
            what = f"a number {adjective}"
        else:
            what = f"a {adjective} {'integer' if isinstance(value, int) else 'number'}"
        raise PlansError(f"{source}: {key} must be {what}, got {json.dumps(value)}")


def _read_section(cls: type, data: Any, prefix: str, source: str) -> Any:
    """A section dataclass from a JSON object: unknown keys are errors, retired keys are dropped."""
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "the file"
        raise PlansError(f"{source}: {where} must be a JSON object, got {json.dumps(data)[:60]}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if dotted in RETIRED_KEYS:
            logger.warning(f"{source}: {dotted} is no longer used and is ignored; remove it")
            continue
        if key not in fields:
            raise PlansError(f"{source}: unknown key {dotted}; known keys of "
                             f"{prefix.rstrip('.') or 'the plans'}: {', '.join(fields)}")
        values[key] = value
    out = {}
    for name, f in fields.items():
        dotted = f"{prefix}{name}"
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PlansError(f"{source}: {dotted} is missing: rerun rud_plan, or add the key")
            continue
        section = _SECTIONS.get(name) if not prefix else None
        if section is not None:
            out[name] = values[name] if isinstance(values[name], section) else _read_section(
                section, values[name], f"{name}.", source)
            continue
        value = _coerce(values[name], hints[name], dotted, source)
        _check(value, f, dotted, source)
        out[name] = value
    return cls(**out)


def _to_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------------- sections
@dataclass
class NetworkPlan:
    """Topology of the backbone, FPN and heads (see :mod:`retinaunet.models`)."""

    strides: list[list[int]] = _positive()
    start_channels: int = _positive(default=8)
    max_channels: int = _positive(default=64)
    fpn_channels: int = _positive(default=32)
    head_channels: int = _positive(default=32)
    head_convs: int = _positive(default=2)
    block: str = _choice("basic", "bottleneck", default="basic")
    blocks_per_stage: list[int] = _positive(default_factory=lambda: [1, 1, 1, 1])
    norm: str = _choice("instance", "batch", "group", "none", default="instance")
    # pyramid levels the detection heads read, finest first (P1 for small objects; no two on one stride)
    head_levels: list[int] = _positive(default_factory=lambda: [2, 3, 4, 5])


@dataclass
class AnchorsPlan:
    """Anchor sizes per head level in voxels; ``z_base_sizes`` for the first (z) axis in 3D.

    ``coverage`` is the share of training objects, dropped at random offsets on the real anchor grid, whose
    best anchor reaches ``matching.iou_high``; ``coverage_by_size`` the same and the planned matcher's
    positives per object-size bucket (see :mod:`retinaunet.planning.coverage`)."""

    base_sizes: list[float] = _positive()
    z_base_sizes: list[float] | None = _positive(default=None)
    scales: list[float] = _positive(default_factory=lambda: [1.0, 2 ** (1 / 3), 2 ** (2 / 3)])
    ratios: list[float] = _positive(default_factory=lambda: [0.5, 1.0, 2.0])
    coverage: float = _fraction(default=1.0)
    coverage_by_size: dict[str, Any] | None = None

    @property
    def per_position(self) -> int:
        """Anchors at each feature-map position."""
        return len(self.scales) * len(self.ratios)


@dataclass
class MatchingPlan:
    """Anchor matching. ``method`` "iou": negative below ``iou_low``, positive from ``iou_high``, ignored
    between, each object's best anchor positive; "adaptive": per object, the ``candidates`` nearest grid
    positions of each level set its own threshold (mean + std of their IoU), near-misses from ``iou_low``
    are ignored (see :class:`retinaunet.anchors.AdaptiveMatcher`)."""

    method: str = _choice("iou", "adaptive", default="iou")
    iou_low: float = _fraction(default=0.4)
    iou_high: float = _fraction(default=0.5)
    candidates: int = _positive(default=4)


@dataclass
class TrainingPlan:
    """Schedule and sampling of `rud_train`."""

    epochs: int = _positive()
    batches_per_epoch: int = _positive()
    learning_rate: float = _positive()
    weight_decay: float = _non_negative(default=1e-5)
    foreground_fraction: float = _fraction(default=0.5)
    # background loader processes; null: chosen at run time for the machine (see training.loader.resolve_workers)
    num_workers: int | None = _non_negative(default=None)
    seg_loss_weight: float = _non_negative(default=1.0)
    val_interval: int = _positive(default=1)
    keep_best: int = _positive(default=5)
    hard_negative_pool: int = _positive(default=20)
    # a step drop of the learning rate: x lr_drop_factor from this share of the schedule on (of --max-minutes
    # when a run has a budget, else of the epochs); null: the constant rate (the paper's)
    lr_drop_at: float | None = _fraction(default=None)
    lr_drop_factor: float = _fraction(default=0.1)
    # foreground patches pick an object of the drawn class with probability proportional to the geometric mean
    # of its box extent in voxels to the power -small_object_bias; 0: every object alike
    small_object_bias: float = _non_negative(default=0.0)


@dataclass
class InferencePlan:
    """Prediction settings, in the order they act; entries that are null in the file are filled in for the dims.

    Decoding (inside the network's prediction of one view of a tile; fixed when validation predictions are
    kept raw for a sweep): ``pre_nms_top_k``, ``decode_min_score``, ``nms_iou`` (NMS of one view's boxes)
    and ``decode_max_detections``.
    Consolidation of the views of a case: ``checkpoints`` (best epochs per fold in the ensemble), ``mirror``
    over ``mirror_axes``, ``consolidation`` ("wbc" with ``wbc_iou``, or "nms" with
    ``consolidation_nms_iou``), and ``merge_iou`` for 2D -> 3D merging.
    After consolidation, the steps named in ``postprocess`` in order (``min_size``, ``min_score``,
    ``max_detections`` per case). ``rud_sweep`` chooses the consolidation and post-processing values on
    validation predictions; the model folder applies them on top of this section.
    """

    pre_nms_top_k: int | None = _positive(default=None)  # null: 10000 in 2D, 50000 in 3D (paper)
    nms_iou: float = _fraction(default=0.1)  # per view, in decoding
    decode_min_score: float = _fraction(default=0.05)  # candidates of a view's decoding
    decode_max_detections: int | None = _positive(default=None)  # per view and tile; null: max_detections
    max_detections: int | None = _positive(default=None)  # per case (step max_detections); null: 10 in 2D, 30 in 3D
    min_score: float = _fraction(default=0.1)  # step min_score, on consolidated boxes
    min_size: float = _non_negative(default=0.0)  # step min_size: voxels (pixels in 2D) at the target spacing
    tile_overlap: float = _fraction(default=0.5)
    mirror: bool = True  # test-time mirroring
    mirror_axes: list[int] | None = _non_negative(default=None)  # null: every axis
    checkpoints: int | None = _positive(default=None)  # best epochs per fold in the ensemble; null: all kept
    consolidation: str = _choice("wbc", "nms", default="wbc")
    wbc_iou: float = _fraction(default=1e-5)
    consolidation_nms_iou: float = _fraction(default=0.1)
    patch_size: list[int] | None = _positive(default=None)  # null: the training patch
    merge_iou: float = _fraction(default=0.1)  # 2D -> 3D merging of slice boxes
    max_components: int | None = _positive(default=None)  # DetU-Net's largest components; null: 5 in 2D, 15 in 3D
    # ordered steps (retinaunet.inference.postprocess) run after consolidation
    postprocess: list[str] = field(default_factory=list)

    @property
    def consolidation_iou(self) -> float:
        """The IoU of the chosen consolidation: ``wbc_iou`` or ``consolidation_nms_iou``."""
        return self.wbc_iou if self.consolidation == "wbc" else self.consolidation_nms_iou


@dataclass
class CropPlan:
    """What preprocessing keeps of a case, for training and prediction alike (:func:`retinaunet.crop.case_crop`):
    ``method`` "nonzero" (the voxels non-zero in any channel) or "body" (CT: the largest connected component
    above ``threshold`` HU in modality ``channel``, widened by ``margin_mm``). A training case's crop always
    holds every one of its objects."""

    method: str = _choice("nonzero", "body", default="nonzero")
    channel: int = _non_negative(default=0)
    threshold: float = -500.0
    margin_mm: float = _non_negative(default=5.0)


def _dim_defaults(dim: int) -> dict[str, Any]:
    """Inference defaults that depend on the network's dims (filled in where the file has null)."""
    return {"pre_nms_top_k": 50000 if dim == 3 else 10000, "max_detections": 30 if dim == 3 else 10,
            "max_components": 15 if dim == 3 else 5, "mirror_axes": list(range(dim))}


_SECTIONS: dict[str, type] = {"network": NetworkPlan, "anchors": AnchorsPlan, "matching": MatchingPlan,
                              "training": TrainingPlan, "inference": InferencePlan, "crop": CropPlan}


def cumulative_stride(strides: Sequence[Sequence[int]]) -> list[int]:
    """Total downsampling per axis of a list of per-stage strides."""
    total = [1] * len(strides[0])
    for s in strides:
        total = [t * int(x) for t, x in zip(total, s)]
    return total


# ------------------------------------------------------------------------------------------------ plans
@dataclass
class Plans:
    """Everything the planner chose, typed. Build with :meth:`from_dict` / :func:`load_plans` (validated)."""

    mode: str = _choice("2d", "2dc", "3d")  # the network's mode; a 3dlr plan is a 3d mode at coarser spacing
    dim: int = _choice(2, 3)  # spatial dims of the network (2 for 2d and 2dc)
    patch_size: list[int] = _positive()
    batch_size: int = _positive()
    num_classes: int = _positive()
    in_channels: int = _positive()
    target_spacing: list[float] = _positive()
    network: NetworkPlan = field(default=None)  # type: ignore[assignment]
    anchors: AnchorsPlan = field(default=None)  # type: ignore[assignment]
    matching: MatchingPlan = field(default_factory=MatchingPlan)
    training: TrainingPlan = field(default=None)  # type: ignore[assignment]
    inference: InferencePlan = field(default_factory=InferencePlan)
    normalization: list[dict[str, Any]] = field(default_factory=lambda: [{"scheme": "zscore"}])
    crop: CropPlan = field(default_factory=CropPlan)
    task: str = ""
    plan_name: str = ""  # "" means the mode
    data_dim: int | None = _choice(2, 3, None, default=None)  # spatial dims of the images; null: ``dim``
    modalities: dict[str, str] = field(default_factory=lambda: {"0": ""})
    class_names: list[str] | None = None  # null: "0", "1", ...
    context_slices: int = _non_negative(default=0)  # 2Dc: neighbouring slices on each side
    reasons: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.plan_name:
            self.plan_name = self.mode
        if self.data_dim is None:
            self.data_dim = self.dim
        if self.class_names is None:
            self.class_names = [str(i) for i in range(self.num_classes)]
        if self.inference is not None:  # the defaults that depend on the network's dims
            for key, value in _dim_defaults(self.dim).items():
                if getattr(self.inference, key) is None:
                    setattr(self.inference, key, value)
            if self.inference.decode_max_detections is None:
                self.inference.decode_max_detections = self.inference.max_detections

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def inference_patch_size(self) -> list[int]:
        """The tile size of prediction: ``inference.patch_size``, else the training patch."""
        return list(self.inference.patch_size or self.patch_size)

    def changed_from_defaults(self) -> dict[str, Any]:
        """``{"section.key": value}`` for every section entry that differs from the schema's default (as this
        plan's dims fill the inference defaults in); entries without a default are always planned, so listed."""
        changed: dict[str, Any] = {}
        dims = _dim_defaults(self.dim)
        for name, cls in _SECTIONS.items():
            section = getattr(self, name)
            for f in dataclasses.fields(cls):
                if f.default is not dataclasses.MISSING:
                    default = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                else:
                    changed[f"{name}.{f.name}"] = getattr(section, f.name)
                    continue
                if name == "inference" and default is None:
                    default = dims.get(f.name, dims["max_detections"] if f.name == "decode_max_detections" else None)
                if getattr(section, f.name) != default:
                    changed[f"{name}.{f.name}"] = getattr(section, f.name)
        return changed

    # ---- json
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "plans") -> Plans:
        """Validated plans from a JSON object; PlansError names the file (``source``), the key and the fix."""
        if isinstance(data, Plans):
            return data.copy()
        return _read_section(cls, data, "", source).validate(source)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``plans.json``."""
        return _to_json(self)

    def copy(self) -> Plans:
        return copy.deepcopy(self)

    def override(self, dotted: str, value: Any, source: str = "--override") -> Plans:
        """Set a dotted key in place (``"training.epochs", 10``), validated like a loaded file."""
        return self.override_all([(dotted, value)], source)

    def override_all(self, items: Sequence[tuple[str, Any]], source: str = "--override") -> Plans:
        """Set several dotted keys in place, validated together once they are all set: keys that must agree
        (``network.head_levels`` and ``anchors.base_sizes``) change in one step."""
        data = self.to_dict()
        for dotted, value in items:
            parts = dotted.split(".")
            node: Any = data
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise PlansError(f"{source}: plans have no key '{dotted}'; see plans.json for the keys")
                node = node[part]
            known = dataclasses.fields(_SECTIONS[parts[0]]) if len(parts) == 2 and parts[0] in _SECTIONS else (
                dataclasses.fields(Plans) if len(parts) == 1 else ())
            if parts[-1] not in {f.name for f in known}:
                raise PlansError(f"{source}: plans have no key '{dotted}'; see plans.json for the keys")
            node[parts[-1]] = value
        new = Plans.from_dict(data, source)
        self.__dict__.update(new.__dict__)
        return self

    def validate(self, source: str = "plans") -> Plans:
        """Cross-key checks (each value's own check runs when it is read)."""
        if self.network is None or self.anchors is None or self.training is None:
            raise PlansError(f"{source}: network, anchors or training is missing: rerun rud_plan")
        try:  # the plan name becomes a folder name: it must not lead out of the task folder
            check_name(self.plan_name, "plan_name")
        except LayoutError as err:
            raise PlansError(f"{source}: {err}") from None
        for key, value in (("patch_size", self.patch_size), ("target_spacing", self.target_spacing)):
            want = self.dim if key == "patch_size" else self.data_dim
            if len(value) != want:
                raise PlansError(f"{source}: {key} must have {want} entries, got {json.dumps(value)}")
        if any(len(s) != self.dim for s in self.network.strides):
            raise PlansError(f"{source}: network.strides must have {self.dim} entries per stage")
        stride = cumulative_stride(self.network.strides)
        bad = [p for p, s in zip(self.patch_size, stride) if p % s]
        if bad:
            raise PlansError(f"{source}: patch_size {self.patch_size} is not divisible by the network's stride "
                             f"{stride}; choose multiples of it")
        levels = self.network.head_levels
        if levels != sorted(set(levels)) or levels[-1] > len(self.network.strides):
            raise PlansError(f"{source}: network.head_levels must be distinct levels in increasing order, at most "
                             f"{len(self.network.strides)} (the network's stages), got {json.dumps(levels)}")
        if len(self.anchors.base_sizes) != len(levels):
            raise PlansError(f"{source}: anchors.base_sizes needs one size per head level {json.dumps(levels)}")
        if self.matching.iou_low > self.matching.iou_high:
            raise PlansError(f"{source}: matching.iou_low must not exceed matching.iou_high")
        if self.crop.channel >= self.num_modalities:
            raise PlansError(f"{source}: crop.channel {self.crop.channel} is not a modality of the plan "
                             f"(0-{self.num_modalities - 1})")
        return self


def parse_value(text: str) -> Any:
    """A command-line value: JSON where it parses (``3``, ``[1,2]``, ``true``), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(plans: Plans, overrides: Sequence[str]) -> Plans:
    """Apply ``key=value`` strings (dotted keys, JSON values) to plans in place, validated by the schema once
    all are set (so keys that must agree can change together)."""
    items = []
    for item in overrides:
        if "=" not in item:
            raise PlansError(f"--override '{item}' must look like key=value, e.g. training.epochs=10")
        key, value = item.split("=", 1)
        items.append((key.strip(), parse_value(value.strip())))
    return plans.override_all(items) if items else plans


def load_plans(path: str | os.PathLike, plan: str | None = None) -> Plans:
    """Read and validate one configuration of ``plans.json``; errors name the file and the key.

    A task's file holds several configurations (``{"default": "3d", "configurations": {"3d": {...},
    "2d": {...}}}``); ``plan`` chooses one (default: the file's default). A file of a single plan (older
    task files, model folders' copies) loads as that plan.
    """
    path = Path(path)
    if not path.exists():
        raise PlansError(f"{path} not found: run rud_plan for this task first")
    try:
        data = read_json(path)
    except ReadError as err:
        raise PlansError(str(err)) from None
    if isinstance(data, Mapping) and "configurations" in data:
        configs = data["configurations"]
        name = plan or data.get("default") or next(iter(configs), None)
        if name not in configs:
            raise PlansError(f"{path.name}: no plan '{name}' (has {', '.join(configs) or 'none'}); add it with "
                             f"rud_plan --mode {name}")
        return Plans.from_dict(configs[name], source=f"{path.name} [{name}]")
    plans = Plans.from_dict(data, source=path.name)
    if plan is not None and plan != plans.plan_name:
        raise PlansError(f"{path.name} holds only plan '{plans.plan_name}'; add '{plan}' with rud_plan --mode {plan}")
    return plans


def plan_names(path: str | os.PathLike) -> tuple[list[str], str | None]:
    """The configurations of a plans file and its default (a single-plan file: its one plan)."""
    path = Path(path)
    if not path.exists():
        return [], None
    data = read_json(path)
    if isinstance(data, Mapping) and "configurations" in data:
        names = list(data["configurations"])
        return names, data.get("default") or (names[0] if names else None)
    name = str(data.get("plan_name") or data.get("mode"))
    return [name], name


def save_plans(plans: Plans, path: str | os.PathLike) -> bool:
    """Write plans atomically; returns False (and writes nothing) when the file already holds them."""
    return _write_if_changed(plans.to_dict(), Path(path))


def _write_if_changed(doc: dict[str, Any], path: Path) -> bool:
    """Write ``doc`` atomically unless ``path`` already holds it (an unreadable file is replaced)."""
    if path.exists():
        try:
            if read_json(path) == json.loads(json.dumps(doc)):
                return False
        except Exception:  # noqa: BLE001 - an unreadable file is simply replaced
            pass
    write_json(doc, path)
    return True


def save_task_plans(plans: Plans, path: str | os.PathLike, default: bool | None = None) -> bool:
    """Add (or replace) ``plans`` as one configuration of a task's ``plans.json``, keeping the others.

    ``default``: make it the file's default (None: only when the file has none yet). A single-plan file is
    converted, its plan kept. Returns False when nothing changed.
    """
    path = Path(path)
    doc: dict[str, Any] = {"default": None, "configurations": {}}
    if path.exists():
        old = read_json(path)
        if isinstance(old, Mapping) and "configurations" in old:
            doc = {"default": old.get("default"), "configurations": dict(old["configurations"])}
        elif isinstance(old, Mapping):
            name = str(old.get("plan_name") or old.get("mode"))
            doc = {"default": name, "configurations": {name: old}}
    name = plans.plan_name
    doc["configurations"][name] = plans.to_dict()
    if default or doc["default"] is None or doc["default"] not in doc["configurations"]:
        doc["default"] = name
    return _write_if_changed(doc, path)


def make_test_plans(dim: int = 2, num_classes: int = 2, patch_size: Sequence[int] | None = None,
                    in_channels: int = 1, mode: str | None = None, **network: Any) -> Plans:
    """A tiny but complete plan for tests and examples (small ResNet, 32 FPN channels)."""
    mode = mode or ("3d" if dim == 3 else "2d")
    if patch_size is None:
        patch_size = [16, 64, 64] if dim == 3 else [64, 64]
    strides = [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]] if dim == 3 else [[2, 2]] * 5
    return Plans(
        task="Task000_Test", mode=mode, dim=dim, data_dim=3 if mode == "2dc" else dim, modalities={"0": "CT"},
        num_classes=num_classes, class_names=[f"class{i}" for i in range(num_classes)],
        target_spacing=[1.0] * (3 if mode == "2dc" else dim), context_slices=3 if mode == "2dc" else 0,
        in_channels=in_channels, patch_size=list(patch_size), batch_size=2,
        network=NetworkPlan(**{"strides": strides, **network}),
        anchors=AnchorsPlan(base_sizes=[4.0, 8.0, 16.0, 32.0], z_base_sizes=[1.0, 2.0, 4.0, 8.0] if dim == 3 else None),
        matching=MatchingPlan(iou_low=0.01 if dim == 3 else 0.1, iou_high=0.5),
        training=TrainingPlan(epochs=2, batches_per_epoch=4, learning_rate=1e-4, num_workers=0),
    )
