"""A plain-text table of a metrics dict (as :func:`retinaunet.evaluation.evaluate.evaluate_cases` returns)."""

from __future__ import annotations

__all__ = ["format_table"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_table(metrics: dict) -> str:
    """One row per class and a mean row; values in percent, '-' where undefined (no objects)."""
    ious = [f"{t:g}" for t in metrics["iou_thresholds"]]
    header = ["class", "objects", "dets"] + [f"AP@{t}" for t in ious] + ["AP@.1:.5", "patientAP", "CPM"]
    rows = []
    for name in metrics["classes"]:
        rows.append([name, str(metrics["num_objects"][name]), str(metrics["num_detections"][name])]
                    + [_fmt(metrics["AP"][t][name]) for t in ious]
                    + [_fmt(metrics["AP_0.1:0.5"][name]), _fmt(metrics["patient_AP"][name]),
                       _fmt(metrics["FROC"]["CPM"][name])])
    rows.append(["mean", str(sum(metrics["num_objects"].values())), str(sum(metrics["num_detections"].values()))]
                + [_fmt(metrics["mAP"][t]) for t in ious]
                + [_fmt(metrics["mAP_0.1:0.5"]), _fmt(metrics["patient_mAP"]), _fmt(metrics["FROC"]["mean_CPM"])])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"{metrics['num_cases']} cases, {metrics['dim']}D boxes, values in %", line(header),
           line(["-" * w for w in widths])]
    out += [line(r) for r in rows[:-1]] + [line(["-" * w for w in widths]), line(rows[-1])]
    return "\n".join(out)
