"""The raw dataset: ``dataset.json``/``dataset.yaml``, its cases, and validation of the whole folder.

Validation reports every problem at once, one line each naming the file and the fix, and holds at
most one case's arrays in memory at a time.
"""

from __future__ import annotations

import filecmp
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from loguru import logger
from tqdm import tqdm

from retinaunet.io import (
    IMAGE_SUFFIXES,
    ReadError,
    label_json_path,
    read_header,
    read_image,
    read_json,
    strip_image_suffix,
)
from retinaunet.layout import TaskPaths
from retinaunet.progress import hidden

MODALITY_PATTERN = re.compile(r"^(?P<case>.+)_(?P<mod>\d{4})$")
INTEGER_PIXELS = ("8-bit", "16-bit", "32-bit", "64-bit")


class DatasetError(RuntimeError):
    """The raw dataset has problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], where: str = "dataset"):
        self.problems = problems
        head = f"{where}: {len(problems)} problem(s) found"
        super().__init__("\n".join([head, *problems]))


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says about a task."""

    name: str
    dim: int
    labels: dict[int, str]
    modalities: dict[int, str]
    test_labels: bool = True
    file: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def class_names(self) -> list[str]:
        return [self.labels[k] for k in sorted(self.labels)]


@dataclass(frozen=True)
class Case:
    """One case: its modality files in order, and its label map and json where present."""

    name: str
    images: list[Path] = field(default_factory=list)
    label: Path | None = None
    label_json: Path | None = None


def _load_mapping(path: Path) -> dict:
    if path.suffix in (".yaml", ".yml"):
        import yaml

        if not path.exists():
            raise ReadError(f"{path}: file not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ReadError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    else:
        data = read_json(path)
    if not isinstance(data, dict):
        raise ReadError(f"{path}: expected a mapping with keys task, dim, labels, modalities")
    return data


def _int_keyed(data: dict, key: str, path: Path) -> dict[int, str]:
    value = data.get(key)
    if not isinstance(value, dict) or not value:
        raise ReadError(f"{path}: '{key}' must be a non-empty mapping like {{\"0\": \"name\"}}")
    try:
        out = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ReadError(f"{path}: the keys of '{key}' must be integers counted from 0") from None
    if sorted(out) != list(range(len(out))):
        raise ReadError(f"{path}: the keys of '{key}' must be 0..{len(out) - 1} without gaps, got {sorted(out)}")
    return out


def _flag(value: object, key: str, path: Path) -> bool:
    """A yes/no entry: JSON true/false, or the words true/false/yes/no (so "false" is not read as true)."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if isinstance(value, (str, int)) and str(value).strip().lower() in words:
        return words[str(value).strip().lower()]
    raise ReadError(f"{path}: '{key}' must be true or false, got {value!r}")


def load_dataset_info(task_dir: str | os.PathLike) -> DatasetInfo:
    """Read ``dataset.json`` (or ``dataset.yaml``) of a task folder (nnDetection's keys)."""
    paths = TaskPaths(Path(task_dir))
    path = paths.dataset_file
    data = _load_mapping(path)
    dim = data.get("dim")
    if dim not in (2, 3):
        raise ReadError(f"{path}: 'dim' must be 2 or 3, got {dim!r}")
    return DatasetInfo(
        name=str(data.get("task", data.get("name", paths.name))),
        dim=int(dim),
        labels=_int_keyed(data, "labels", path),
        modalities=_int_keyed(data, "modalities", path),
        test_labels=_flag(data.get("test_labels", True), "test_labels", path),
        file=path,
    )


def _image_files(folder: Path, problems: list[str] | None = None) -> Iterator[Path]:
    """Image files of a folder; broken symbolic links among them are reported in ``problems``."""
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or not p.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            if p.is_file():
                yield p
            elif p.is_symlink() and problems is not None:
                problems.append(f"{p}: broken symbolic link (to {os.readlink(p)}); restore its target or remove it")


def scan_cases(task_dir: str | os.PathLike, split: str = "train") -> tuple[list[Case], list[str]]:
    """Cases of ``split`` ("train" or "test") and the naming problems met while listing them."""
    paths = TaskPaths(Path(task_dir))
    images_dir, labels_dir = {"train": (paths.images_tr, paths.labels_tr),
                              "test": (paths.images_ts, paths.labels_ts)}[split]
    problems: list[str] = []
    files: dict[str, dict[int, Path]] = {}
    for f in _image_files(images_dir, problems):
        match = MODALITY_PATTERN.match(strip_image_suffix(f.name))
        if match is None:
            problems.append(f"{f}: name must be <case>_<4-digit modality>.nii.gz, e.g. case001_0000.nii.gz; rename it")
            continue
        case, mod = match.group("case"), int(match.group("mod"))
        if mod in files.setdefault(case, {}):
            problems.append(f"{f}: case '{case}' modality {mod:04d} exists twice "
                            f"(also {files[case][mod].name}); remove one")
            continue
        files[case][mod] = f
    labels: dict[str, Path] = {}
    for f in _image_files(labels_dir, problems):
        case = strip_image_suffix(f.name)
        if case in labels:
            problems.append(f"{f}: label of case '{case}' exists twice (also {labels[case].name}); remove one")
            continue
        labels[case] = f
    cases = []
    for name in sorted(files):
        label = labels.get(name)
        mods = files[name]
        cases.append(Case(name, [mods[k] for k in sorted(mods)], label,
                          label_json_path(label) if label is not None else None))
    for name in sorted(set(labels) - set(files)):
        problems.append(f"{labels[name]}: label without images (no {name}_0000.* in {images_dir}); "
                        "add the images or remove the label")
    return cases, problems


def list_cases(task_dir: str | os.PathLike, split: str = "train") -> list[Case]:
    """Cases of a split, sorted by name (naming problems are reported by :func:`validate_dataset`)."""
    return scan_cases(task_dir, split)[0]


def _check_case(case: Case, info: DatasetInfo, need_label: bool) -> list[str]:
    problems: list[str] = []
    if "." in case.name:
        problems.append(f"{case.images[0]}: case name '{case.name}' contains a dot; rename without dots")
    expected = info.num_modalities
    names = {int(MODALITY_PATTERN.match(strip_image_suffix(p.name)).group("mod")) for p in case.images}
    for mod in range(expected):
        if mod not in names:
            problems.append(f"{case.images[0].parent / f'{case.name}_{mod:04d}.nii.gz'}: missing modality {mod} "
                            f"({info.modalities[mod]}); add the file")
    for mod in sorted(names - set(range(expected))):
        problems.append(f"{case.images[0].parent}/{case.name}_{mod:04d}: modality {mod} is not in "
                        "dataset.json 'modalities'; remove the file or declare the modality")
    reference = None
    for f in case.images:
        try:
            geom, pixel = read_header(f)
        except ReadError as err:
            problems.append(str(err))
            continue
        if geom.dim != info.dim:
            problems.append(f"{f}: image is {geom.dim}D but dataset.json says dim {info.dim}; fix 'dim' or the file")
            continue
        if reference is None:
            reference = geom
        elif (diff := reference.same_as(geom)) is not None:
            problems.append(f"{f}: {diff} of modality 0; resample it onto modality 0's grid")
        if pixel.startswith("vector"):
            problems.append(f"{f}: has {pixel} components per voxel; store each modality as its own file "
                            "(_0000, _0001, ...)")
            continue
        if "float" not in pixel:  # integer voxels cannot be NaN: the header is enough
            continue
        try:
            array, _ = read_image(f)  # NaN/inf voxels and vector images raise ReadError
        except ReadError as err:
            problems.append(str(err))
            continue
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            problems.append(f"{f}: {bad} NaN/inf voxels; replace them (e.g. with the background value)")
        del array
    if case.label is None:
        if need_label:
            problems.append(f"{case.images[0]}: no label for case '{case.name}'; add labels*/{case.name}.nii.gz "
                            "(an all-zero map for a case without objects)")
        return problems
    problems.extend(_check_label(case, info, reference))
    return problems


def _check_label(case: Case, info: DatasetInfo, reference) -> list[str]:
    problems: list[str] = []
    try:
        geom, pixel = read_header(case.label)
    except ReadError as err:
        return [str(err)]
    if reference is not None and (diff := reference.same_as(geom)) is not None:
        problems.append(f"{case.label}: {diff} of the image; the label must lie on the image's grid")
    integer = "integer" in pixel and "vector" not in pixel
    if not integer:
        problems.append(f"{case.label}: pixel type '{pixel}' is not integer; save the instance map as integers")
    try:
        array, _ = read_image(case.label)
    except ReadError as err:
        return [*problems, str(err)]
    if not integer and np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.all(array == np.round(array)):
            return problems
        array = array.astype(np.int64)
    ids = {int(i) for i in np.unique(array) if i != 0}
    del array
    if any(i < 0 for i in ids):
        problems.append(f"{case.label}: negative values in the instance map; use 0 for background, 1..N for objects")
    json_file = case.label_json
    if json_file is None or not json_file.exists():
        problems.append(f"{json_file}: missing; write {{\"instances\": {{\"1\": 0}}}} mapping each instance id "
                        "to its class (use {\"instances\": {}} for a case without objects)")
        return problems
    try:
        data = read_json(json_file)
    except ReadError as err:
        return [*problems, str(err)]
    instances = data.get("instances") if isinstance(data, dict) else None
    if not isinstance(instances, dict):
        return [*problems, f"{json_file}: expected {{\"instances\": {{\"1\": 0, ...}}}} (instance id -> class)"]
    try:
        mapping = {int(k): int(v) for k, v in instances.items()}
    except (TypeError, ValueError):
        return [*problems, f"{json_file}: instance ids and classes must be integers"]
    for i in sorted(ids - set(mapping)):
        problems.append(f"{json_file}: instance {i} is in the label map but not in the json; add \"{i}\": <class>")
    for i in sorted(set(mapping) - ids):
        problems.append(f"{json_file}: instance {i} is in the json but not in the label map; remove it")
    for i, c in sorted(mapping.items()):
        if c not in info.labels:
            problems.append(f"{json_file}: instance {i} has class {c}, not in dataset.json 'labels' "
                            f"(0..{info.num_classes - 1}); fix the class")
    return problems


def _name_key(name: str) -> str:
    """Names that look the same to a user: equal up to letter case and Unicode normalisation."""
    return unicodedata.normalize("NFKC", name).casefold()


def _same_file_content(a: Path, b: Path) -> bool:
    """True when two files hold the same bytes (``filecmp`` compares sizes first, then contents)."""
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def validate_dataset(task_dir: str | os.PathLike, progress: bool = True,
                     warnings: list[str] | None = None) -> list[str]:
    """Every problem of a raw dataset, one line each naming the file and the fix (empty when valid).

    Doubts that do not stop the pipeline (a test image identical to the training image of its name) are
    appended to ``warnings`` when given.
    """
    task_dir = Path(task_dir)
    try:
        info = load_dataset_info(task_dir)
    except ReadError as err:
        return [str(err)]
    problems: list[str] = []
    paths = TaskPaths(task_dir)
    names: dict[str, dict[str, Path]] = {}
    for split, need in (("train", True), ("test", info.test_labels)):
        cases, naming = scan_cases(task_dir, split)
        problems.extend(naming)
        if split == "train" and not cases:
            problems.append(f"{paths.images_tr}: no training cases; put <case>_0000.nii.gz files there")
        seen: dict[str, str] = {}
        for case in cases:
            key = _name_key(case.name)
            if key in seen:
                problems.append(f"{case.images[0]}: case name '{case.name}' duplicates '{seen[key]}' "
                                "(names differ only in case or in Unicode form); rename one")
            seen[key] = case.name
        names[split] = {_name_key(c.name): Path(c.images[0]) for c in cases if c.images}
        bar = tqdm(cases, desc=f"validate {split}", disable=hidden(not progress or not cases), leave=False)
        for case in bar:
            problems.extend(_check_case(case, info, need))
    # a shared name alone is common (case_0000 in both folders); an identical image file is a leak
    both = sorted(k for k in names["train"].keys() & names["test"].keys()
                  if _same_file_content(names["train"][k], names["test"][k]))
    if both and warnings is not None:
        warnings.append(f"{paths.images_ts}: {len(both)} test image(s) identical to the training image of the same "
                        f"name ({', '.join(both[:5])}{' ...' if len(both) > 5 else ''}); a test case seen in "
                        "training overstates the results")
    return problems


def check_dataset(task_dir: str | os.PathLike, progress: bool = True) -> DatasetInfo:
    """Validate and return the dataset description, or raise :class:`DatasetError` listing every problem."""
    warnings: list[str] = []
    problems = validate_dataset(task_dir, progress=progress, warnings=warnings)
    for line in warnings:
        logger.warning(line)
    if problems:
        raise DatasetError(problems, where=str(task_dir))
    return load_dataset_info(task_dir)
