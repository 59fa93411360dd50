"""Writing a converted task in the standard raw layout: dataset.json, cases, the case-name map, a summary.

Every converter goes through :class:`TaskWriter`. A case is written image(s) first, label map next and
its label json last, each atomically; a case counts as done only when its json exists, so an
interrupted conversion is resumed by running the same command again (done cases are skipped). The
source is only ever read.

Case names that the layout cannot hold (LUNA16's seriesuids contain dots) are mapped to valid ids by
:func:`case_id`; the map ``case_names.json`` ({case id: original name}) sits in the task folder and
every output that names a case can show the original again (:func:`load_case_names`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retinaunet.io import Geometry, read_json, write_image, write_json
from retinaunet.layout import CASE_NAMES, TaskPaths

__all__ = ["CASE_NAMES", "ConvertError", "Summary", "TaskWriter", "case_id", "has_true_outlines",
           "load_case_names"]

_BAD_CHARS = re.compile(r"[^A-Za-z0-9_\-]+")


class ConvertError(RuntimeError):
    """A source that cannot be converted; the message names the file and the fix."""


def case_id(name: str, taken: set[str] | None = None) -> str:
    """A valid case id for ``name``: every run of characters other than letters, digits, ``_`` and ``-``
    becomes ``_`` (``1.3.6.1`` -> ``1_3_6_1``); ``_2``, ``_3`` ... is appended when ``taken`` (lower-cased
    ids already used) holds it. The id is added to ``taken``."""
    base = _BAD_CHARS.sub("_", name).strip("_") or "case"
    candidate, k = base, 1
    while taken is not None and candidate.lower() in taken:
        k += 1
        candidate = f"{base}_{k}"
    if taken is not None:
        taken.add(candidate.lower())
    return candidate


def load_case_names(folder: str | os.PathLike | None) -> dict[str, str]:
    """{case id: original name} of a task folder, a model folder inside one, or a prediction folder
    inside one: the nearest ``case_names.json`` in ``folder`` or up to three folders above ({} if none)."""
    if folder is None:
        return {}
    here = Path(folder).resolve()
    for candidate in [here, *list(here.parents)[:3]]:
        path = candidate / CASE_NAMES
        if path.is_file():
            data = read_json(path)
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return {}


def has_true_outlines(task_dir: str | os.PathLike) -> bool:
    """False when dataset.json says ``"seg_supervision": false`` (label maps painted from boxes or points,
    whose outlines must not supervise the segmentation head)."""
    paths = TaskPaths(Path(task_dir))
    path = paths.dataset_file
    if not path.is_file() or path.suffix != ".json":
        return True
    data = read_json(path)
    return not (isinstance(data, dict) and data.get("seg_supervision") is False)


@dataclass
class Summary:
    """What a conversion did: cases written and skipped, objects per class, dropped items with reasons, warnings."""

    class_names: list[str]
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    objects: Counter = field(default_factory=Counter)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    task_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def drop(self, item: str, reason: str) -> None:
        self.dropped.append((item, reason))

    def warn(self, text: str) -> None:
        """Something written as asked that the user should know about (printed after the counts)."""
        self.warnings.append(text)

    def count(self, classes: Mapping[Any, int]) -> None:
        self.objects.update(int(c) for c in classes.values())

    def text(self) -> str:
        lines = [f"task: {self.task_dir}"] if self.task_dir is not None else []
        lines += [f"cases: {len(self.written)} written, {len(self.skipped)} already there (skipped)"]
        per_class = ", ".join(f"{name} {self.objects.get(k, 0)}" for k, name in enumerate(self.class_names))
        lines.append(f"objects: {sum(self.objects.values())} ({per_class})")
        if self.dropped:
            reasons = Counter(reason for _, reason in self.dropped)
            lines.append(f"dropped: {len(self.dropped)}")
            for reason, n in reasons.most_common():
                examples = [item for item, r in self.dropped if r == reason][:3]
                lines.append(f"  {n} x {reason} (e.g. {', '.join(examples)})")
        else:
            lines.append("dropped: none")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class TaskWriter:
    """Writes one task folder in the raw layout (see DESIGN.md, 'The raw dataset').

    ``labels``: class names in class order; ``modalities``: modality names; ``extra``: further
    dataset.json keys (e.g. ``{"seg_supervision": False}``).
    """

    def __init__(self, task_dir: str | os.PathLike, labels: Sequence[str], modalities: Sequence[str],
                 dim: int = 3, test_labels: bool = True, extra: Mapping[str, Any] | None = None):
        self.paths = TaskPaths(Path(task_dir))
        self.dataset = {"task": self.paths.name, "dim": dim,
                        "labels": {str(k): str(v) for k, v in enumerate(labels)},
                        "modalities": {str(k): str(v) for k, v in enumerate(modalities)},
                        "test_labels": test_labels, **dict(extra or {})}
        self.summary = Summary(list(labels), task_dir=self.paths.root)

    def start(self) -> TaskWriter:
        """Create the folders and write dataset.json; an existing one must describe the same task."""
        existing = self.paths.root / "dataset.json"
        if existing.is_file():
            old = read_json(existing)
            for key in ("dim", "labels", "modalities"):
                if isinstance(old, dict) and old.get(key) != self.dataset[key]:
                    raise ConvertError(f"{existing}: '{key}' is {old.get(key)!r}, this conversion writes "
                                       f"{self.dataset[key]!r}; convert into a new task folder")
        for folder in (self.paths.images_tr, self.paths.labels_tr):
            folder.mkdir(parents=True, exist_ok=True)
        write_json(self.dataset, existing)
        return self

    def write_case_names(self, names: Mapping[str, str]) -> Path | None:
        """Save {case id: original name} (only the entries whose id differs from the name)."""
        changed = {k: v for k, v in sorted(names.items()) if k != v}
        if not changed:
            return None
        return write_json(changed, self.paths.root / CASE_NAMES)

    def _dirs(self, split: str) -> tuple[Path, Path]:
        if split == "train":
            return self.paths.images_tr, self.paths.labels_tr
        if split == "test":
            return self.paths.images_ts, self.paths.labels_ts
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def is_done(self, case: str, split: str = "train") -> bool:
        """True when the case's label json (written last) and its first image exist."""
        images, labels = self._dirs(split)
        return (labels / f"{case}.json").is_file() and (images / f"{case}_0000.nii.gz").is_file()

    def skip(self, case: str, split: str = "train") -> None:
        """Record a case already written by an earlier run (its objects enter the summary)."""
        _, labels = self._dirs(split)
        data = read_json(labels / f"{case}.json")
        self.summary.skipped.append(case)
        self.summary.count(data.get("instances", {}))

    def write_case(self, case: str, images: Sequence[np.ndarray], geometry: Geometry, instances: np.ndarray,
                   classes: Mapping[int, int], split: str = "train") -> None:
        """Write the modality images, the instance map (uint16, 0 background) and its json."""
        images_dir, labels_dir = self._dirs(split)
        ids = {int(i) for i in np.unique(instances) if i != 0}
        if ids != {int(k) for k in classes}:
            raise ValueError(f"{case}: instance ids {sorted(ids)} differ from the classes' ids {sorted(classes)}")
        for mod, image in enumerate(images):
            write_image(image, geometry, images_dir / f"{case}_{mod:04d}.nii.gz")
        write_image(instances.astype(np.uint16 if instances.max(initial=0) < 65536 else np.uint32), geometry,
                    labels_dir / f"{case}.nii.gz")
        mapping = {str(k): int(v) for k, v in sorted(classes.items())}
        write_json({"instances": mapping}, labels_dir / f"{case}.json")
        self.summary.written.append(case)
        self.summary.count(mapping)
