"""The LUNA16 challenge's FROC and CPM, and its submission CSV, from ``rud_predict`` outputs.

The definitions are those of the challenge's evaluation script:

- A candidate is a point (x, y, z world mm) with a probability; at most 100 per scan count (when a scan
  has more, those with a probability above the 101st highest, at most 100).
- A candidate hits a nodule when its squared distance to the nodule centre is below the squared radius
  (diameter / 2; a diameter below 0 counts as 10 mm). Matching is class-agnostic.
- Per nodule of ``annotations.csv`` (in file order): every candidate hitting it is taken off the list of
  false positives; the nodule counts as found with the highest probability among them, further hits
  are ignored (neither true nor false positives). A candidate hitting two nodules finds both.
- Candidates hitting a finding of ``annotations_excluded.csv`` (and no included nodule) are ignored.
- The remaining candidates are false positives. Over the scans, the operating points are the distinct
  probabilities, from the highest down (ties accepted together), starting at (0, 0):
  ``fps = FP / number of scans`` and ``sensitivity = TP / number of nodules`` (missed nodules count in the
  denominator only). Sensitivities at 1/8, 1/4, 1/2, 1, 2, 4 and 8 FPs per scan are read off this curve
  by linear interpolation (``numpy.interp``; beyond the last point the last sensitivity); CPM is their
  mean. Without any found nodule every sensitivity is 0.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retinaunet.convert.luna16 import LunaNodule, read_luna_csv
from retinaunet.evaluation.froc import FROC_RATES
from retinaunet.evaluation.io import EvaluationError
from retinaunet.io import atomic_path, read_json

__all__ = ["LUNA_MAX_MARKS", "Candidate", "LunaResult", "luna_candidates", "luna_froc", "write_submission"]

LUNA_MAX_MARKS = 100
EXCLUDED_DEFAULT_DIAMETER = 10.0
SUBMISSION_HEADER = ("seriesuid", "coordX", "coordY", "coordZ", "probability")


@dataclass(frozen=True)
class Candidate:
    """One CAD mark: world centre (x, y, z) mm and probability."""

    seriesuid: str
    centre: tuple[float, float, float]
    probability: float


@dataclass
class LunaResult:
    """FROC curve (``fps``, ``sensitivity``, ``thresholds``), sensitivities at the rates, CPM and counts."""

    rates: tuple[float, ...]
    at_rates: np.ndarray
    cpm: float
    fps: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"cpm": self.cpm, "rates": list(self.rates), "sensitivity_at_rates": self.at_rates.tolist(),
                "counts": self.counts, "curve": {"fps": self.fps.tolist(), "sensitivity": self.sensitivity.tolist(),
                                                 "thresholds": self.thresholds.tolist()}}


def _limit_marks(cands: list[Candidate], max_marks: int) -> list[Candidate]:
    """The challenge's cap: with more than ``max_marks`` marks keep those strictly above the
    (max_marks+1)-th highest probability, at most ``max_marks``, in their original order."""
    if max_marks <= 0 or len(cands) <= max_marks:
        return cands
    threshold = sorted((c.probability for c in cands), reverse=True)[max_marks]
    return [c for c in cands if c.probability > threshold][:max_marks]


def _radius_squared(n: LunaNodule) -> float:
    diameter = n.diameter if n.diameter >= 0 else EXCLUDED_DEFAULT_DIAMETER
    return (diameter / 2.0) ** 2


def luna_froc(candidates: Iterable[Candidate], nodules: Iterable[LunaNodule], seriesuids: Sequence[str],
              excluded: Iterable[LunaNodule] = (), rates: Sequence[float] = FROC_RATES,
              max_marks: int = LUNA_MAX_MARKS) -> LunaResult:
    """FROC and CPM of ``candidates`` on the scans ``seriesuids`` (see the module docstring).

    Nodules and candidates of other scans are ignored; a scan without candidates has none.
    """
    scans = list(dict.fromkeys(seriesuids))
    if not scans:
        raise EvaluationError("LUNA16 evaluation: no scans to evaluate")
    wanted = set(scans)
    by_scan: dict[str, list[Candidate]] = {s: [] for s in scans}
    for c in candidates:
        if c.seriesuid in wanted:
            by_scan[c.seriesuid].append(c)
    findings: dict[str, list[tuple[LunaNodule, bool]]] = {s: [] for s in scans}
    for n in nodules:
        if n.seriesuid in wanted:
            findings[n.seriesuid].append((n, True))
    for n in excluded:
        if n.seriesuid in wanted:
            findings[n.seriesuid].append((n, False))
    labels, probs = [], []  # the FROC's entries: found nodules (1) and false positives (0)
    counts = dict.fromkeys(("scans", "nodules", "found", "missed", "false_positives", "ignored_repeated",
                            "ignored_excluded", "candidates"), 0)
    counts["scans"] = len(scans)
    for scan in scans:
        cands = _limit_marks(by_scan[scan], max_marks)
        counts["candidates"] += len(cands)
        points = np.array([c.centre for c in cands], dtype=np.float64).reshape(-1, 3)
        remaining = np.ones(len(cands), dtype=bool)
        for nodule, included in findings[scan]:
            dist2 = ((points - np.asarray(nodule.centre)) ** 2).sum(1)
            hits = np.flatnonzero(dist2 < _radius_squared(nodule))
            if included:
                counts["nodules"] += 1
                if len(hits):
                    counts["found"] += 1
                    counts["ignored_repeated"] += len(hits) - 1
                    labels.append(1)
                    probs.append(max(cands[i].probability for i in hits))
                else:
                    counts["missed"] += 1
                remaining[hits] = False
            else:
                counts["ignored_excluded"] += int(remaining[hits].sum())
                remaining[hits] = False
        for i in np.flatnonzero(remaining):
            labels.append(0)
            probs.append(cands[i].probability)
        counts["false_positives"] += int(remaining.sum())
    fps, sens, thresholds = _froc_points(np.asarray(labels), np.asarray(probs, dtype=np.float64),
                                         counts["nodules"], len(scans))
    at_rates = np.interp(np.asarray(rates, dtype=np.float64), fps, sens)
    return LunaResult(tuple(rates), at_rates, float(at_rates.mean()), fps, sens, thresholds, counts)


def _froc_points(labels: np.ndarray, probs: np.ndarray, num_nodules: int, num_scans: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating points from (0, 0) over the distinct probabilities, highest first."""
    order = np.argsort(-probs, kind="stable")
    labels, probs = labels[order].astype(bool), probs[order]
    last = np.append(probs[1:] != probs[:-1], True) if len(probs) else np.zeros(0, dtype=bool)
    tp = np.cumsum(labels)[last]
    fp = np.cumsum(~labels)[last]
    fps = np.concatenate([[0.0], fp / num_scans])
    sens = np.concatenate([[0.0], tp / num_nodules if num_nodules else np.zeros(len(tp))])
    return fps, sens, np.concatenate([[np.inf], probs[last]])


def luna_candidates(pred_dirs: Sequence[str | os.PathLike], names: Mapping[str, str] | None = None
                    ) -> tuple[list[Candidate], list[str]]:
    """Candidates of every prediction JSON in ``pred_dirs`` (box centres in world mm, all classes) and the
    seriesuids of the predicted scans. ``names`` maps case ids back to seriesuids (``case_names.json``);
    a JSON's own ``source_name`` is used otherwise, else the case id."""
    names = dict(names or {})
    cands, scans = [], []
    for folder in pred_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise EvaluationError(f"{folder}: prediction folder not found")
        for path in sorted(folder.glob("*.json")):
            doc = read_json(path)
            if not (isinstance(doc, dict) and "case" in doc and "boxes" in doc):
                continue
            uid = names.get(str(doc["case"])) or doc.get("source_name") or str(doc["case"])
            scans.append(uid)
            for k, box in enumerate(doc["boxes"]):
                centre = box.get("center_world")
                if centre is None or len(centre) != 3:
                    raise EvaluationError(f"{path}: box {k} has no 3D 'center_world'; LUNA16 needs 3D predictions "
                                          "as rud_predict writes them")
                cands.append(Candidate(uid, tuple(float(v) for v in centre), float(box["score"])))
    if not scans:
        raise EvaluationError(f"{', '.join(map(str, pred_dirs))}: no prediction JSONs found")
    return cands, scans


def write_submission(candidates: Iterable[Candidate], path: str | os.PathLike) -> Path:
    """The challenge's submission CSV: seriesuid, coordX, coordY, coordZ, probability (one row a mark).

    Numbers are written in full (the shortest text that reads back as the same float): rounded
    probabilities would tie marks that the scores order, and the challenge's script handles ties."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SUBMISSION_HEADER)
    for c in candidates:
        writer.writerow([c.seriesuid, *[float(v) for v in c.centre], float(c.probability)])  # repr: exact
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return path


def read_seriesuids(path: str | os.PathLike) -> list[str]:
    """The challenge's ``seriesuids.csv``: one seriesuid per line (first column; a header line is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: seriesuid list not found")
    rows = [r[0].strip() for r in csv.reader(path.read_text().splitlines()) if r and r[0].strip()]
    return [r for r in rows if r.lower() != "seriesuid"]


def evaluate_luna(pred_dirs: Sequence[str | os.PathLike], annotations: str | os.PathLike,
                  excluded: str | os.PathLike | None = None, names: Mapping[str, str] | None = None,
                  seriesuids: Sequence[str] | None = None, out_dir: str | os.PathLike | None = None) -> LunaResult:
    """Evaluate prediction folders as the challenge does; writes ``luna_submission.csv`` and
    ``luna_metrics.json`` into ``out_dir`` unless it is None. The scans evaluated are ``seriesuids`` when
    given (a scan without predictions has no candidates), else every predicted scan."""
    cands, predicted = luna_candidates(pred_dirs, names)
    nodules = read_luna_csv(annotations)
    excl = read_luna_csv(excluded) if excluded is not None else []
    result = luna_froc(cands, nodules, list(seriesuids) if seriesuids else predicted, excl)
    if out_dir is not None:
        from retinaunet.io import write_json

        out_dir = Path(out_dir)
        write_submission(cands, out_dir / "luna_submission.csv")
        write_json(result.to_dict(), out_dir / "luna_metrics.json")
    return result


def format_luna(result: LunaResult) -> str:
    """A short table: sensitivity per FP rate, CPM and the counts."""
    head = "  ".join(f"{r:>6g}" for r in result.rates)
    vals = "  ".join(f"{s:6.3f}" for s in result.at_rates)
    c = result.counts
    return (f"LUNA16 FROC (FPs per scan)\n{head}\n{vals}\nCPM {result.cpm:.4f}\n"
            f"{c['scans']} scans, {c['nodules']} nodules: {c['found']} found, {c['missed']} missed; "
            f"{c['false_positives']} false positives; ignored: {c['ignored_repeated']} repeated hits, "
            f"{c['ignored_excluded']} on excluded findings")
