"""Where everything lives: the data root, task lookup and the path of every artefact.

The only module that reads the environment (``RUD_DATA``, ``RUD_TASK``). Functions fail with a
one-line message only when they are used, so importing the package never needs a data root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

TASK_PATTERN = re.compile(r"^Task(\d{3})_([A-Za-z0-9][A-Za-z0-9_\-]*)$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,99}$")

FOLD_NAME = "fold{}"  # a fold of a model folder: models/<model>_<plan>/fold<k>
CASE_NAMES = "case_names.json"  # a converted task's {case id: original name}, copied into its model folders


class LayoutError(RuntimeError):
    """A path or task that cannot be resolved; the message says what to do."""


def check_name(name: object, what: str = "name") -> str:
    """``name`` when it is one plain folder or file name (letters, digits, ``_ . + -``), else LayoutError.

    Names from plans.json, --override or the command line become path components inside the task
    folder; a separator, ``..`` or an absolute path would let a write or a delete land outside it.
    """
    text = str(name)
    if not isinstance(name, (str, int)) or not NAME_PATTERN.match(text) or ".." in text:
        raise LayoutError(f"{what} {text!r} is not a plain name: use letters, digits, '_', '-', '.' and '+', "
                          "no path separators or '..'")
    return text


def data_root(root: str | os.PathLike | None = None, create: bool = False) -> Path:
    """The folder holding the task folders: ``root`` if given, else ``$RUD_DATA``. ``create``: make it when
    it is missing (commands that write a new task: rud_example, rud_convert)."""
    value = root if root is not None else os.environ.get("RUD_DATA")
    if not value:
        raise LayoutError("RUD_DATA is not set: export RUD_DATA=/path/to/data (the folder holding TaskXXX_Name)")
    path = Path(value).expanduser()
    if create and not path.exists():
        path.mkdir(parents=True, exist_ok=True)
    if not path.is_dir():
        raise LayoutError(f"data root {path} does not exist: create it or point RUD_DATA at the right folder")
    return path


def default_task() -> str | None:
    """The task named by ``$RUD_TASK`` (used when a command gets no ``-t``)."""
    return os.environ.get("RUD_TASK") or None


def task_name(number: int, name: str) -> str:
    """``task_name(1, "Shapes") -> "Task001_Shapes"``; LayoutError for a number or name that is no task name."""
    text = f"Task{number:03d}_{name}" if isinstance(number, int) and 0 <= number <= 999 else ""
    if not TASK_PATTERN.match(text):
        raise LayoutError(f"task number {number!r} and name {name!r} do not make a task name: use a number "
                          "0-999 and a name of letters, digits, '_' and '-'")
    return text


def find_task(task: str | int | os.PathLike | None, root: str | os.PathLike | None = None) -> Path:
    """Resolve a task given as a folder path, a number (``1``, ``"001"``) or a full name ``Task001_Name``."""
    if task is None:
        task = default_task()
        if task is None:
            raise LayoutError("no task given: pass -t/--task (number or TaskXXX_Name) or set RUD_TASK")
    text = str(task)
    as_path = Path(text).expanduser()
    if as_path.is_dir() and any((as_path / f).exists() for f in ("dataset.json", "dataset.yaml")):
        return as_path.resolve()
    base = data_root(root)
    if TASK_PATTERN.match(text):
        path = base / text
        if not path.is_dir():
            raise LayoutError(f"task folder {path} not found: check the name or RUD_DATA")
        return path
    if text.isdigit():
        number = int(text)
        hits = sorted(p for p in base.iterdir() if p.is_dir() and (m := TASK_PATTERN.match(p.name))
                      and int(m.group(1)) == number)
        if not hits:
            raise LayoutError(f"no task with number {number} in {base}: expected a folder Task{number:03d}_Name")
        if len(hits) > 1:
            names = ", ".join(p.name for p in hits)
            raise LayoutError(f"task number {number} is ambiguous in {base} ({names}): pass the full name")
        return hits[0]
    raise LayoutError(f"cannot read task '{text}': give a number (1, 001) or a name like Task001_Name")


@dataclass(frozen=True)
class TaskPaths:
    """Every artefact's path inside one task folder (see DESIGN.md, 'The raw dataset')."""

    root: Path

    @classmethod
    def from_task(cls, task: str | int | os.PathLike | None, root: str | os.PathLike | None = None) -> TaskPaths:
        return cls(find_task(task, root))

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def dataset_file(self) -> Path:
        """``dataset.json``, or ``dataset.yaml`` where only that exists."""
        json_file = self.root / "dataset.json"
        for alt in ("dataset.yaml", "dataset.yml"):
            if not json_file.exists() and (self.root / alt).exists():
                return self.root / alt
        return json_file

    @property
    def raw(self) -> Path:
        return self.root / "raw_splitted"

    @property
    def images_tr(self) -> Path:
        return self.raw / "imagesTr"

    @property
    def labels_tr(self) -> Path:
        return self.raw / "labelsTr"

    @property
    def images_ts(self) -> Path:
        return self.raw / "imagesTs"

    @property
    def labels_ts(self) -> Path:
        return self.raw / "labelsTs"

    @property
    def fingerprint(self) -> Path:
        return self.root / "fingerprint.json"

    @property
    def plans(self) -> Path:
        return self.root / "plans.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    def preprocessed(self, plan_name: str) -> Path:
        return self.root / "preprocessed" / check_name(plan_name, "plan_name")

    def model_dir(self, model: str, plan_name: str) -> Path:
        return self.root / "models" / f"{check_name(model, 'model')}_{check_name(plan_name, 'plan_name')}"

    def fold_dir(self, model: str, plan_name: str, fold: int) -> Path:
        """``models/<model>_<plan>/fold<k>``; its contents belong to :mod:`retinaunet.model_folder`."""
        return self.model_dir(model, plan_name) / FOLD_NAME.format(int(fold))

    def predictions(self, run: str) -> Path:
        return self.root / "predictions" / check_name(run, "run name")
