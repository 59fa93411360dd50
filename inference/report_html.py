"""``report.html``: one self-contained page per prediction run, to read the findings case by case.

Built from the run's prediction JSONs and the images they were predicted from. At the top a summary
table (per case: findings, findings at or above the operating point, the top score and class); then per
case its findings sorted by score, each with axial, coronal and sagittal crops around the box
(:mod:`retinaunet.inference.report_thumbs`), size in mm, class, score, the world centre and whether it
reaches the operating point; at the end the rows of ``predictions.csv`` that the page shows, each linking
to its finding. Finding k of a case (box k of ``<case>.json``, the case's k-th row in the CSV) has the
anchor ``report.html#<case>-<k>``.

The page holds everything inline (styles, PNG thumbnails as data URIs, a few lines of script for the
"only at or above the operating point" filter), so it opens offline and can be mailed as one file. A
case shows at most ``max_findings`` findings with thumbnails; the count of the rest is stated.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from retinaunet.inference.export import CSV_NAME, read_predictions
from retinaunet.inference.report_thumbs import COLOURS, grey_window, thumbnails

from retinaunet.io import atomic_path, read_image

__all__ = ["REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"
MAX_FINDINGS = 25

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#1d2433;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.6em 0 .4em;border-bottom:1px solid #ccd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .6em;border-bottom:1px solid #dde;text-align:left;
font-size:.9em}th{background:#eef}.num{text-align:right;font-variant-numeric:tabular-nums}
.finding{display:flex;gap:1em;align-items:flex-start;background:#fff;border:1px solid #dde;border-radius:6px;
padding:.6em;margin:.5em 0}.finding.below{opacity:.6}.thumbs{display:flex;gap:.4em}
.thumbs figure{margin:0;text-align:center;font-size:.75em;color:#556}.thumbs img{display:block;background:#000}
.facts td{border:none;padding:.1em .5em}.yes{color:#1a7f37;font-weight:600}.no{color:#8a8f98}
.meta{color:#556;font-size:.9em}body.above-only .below{display:none}
.summary td:nth-child(-n+2){word-break:break-all;max-width:24em}
"""

SCRIPT = """
(function () {
  var box = document.getElementById('above-only');
  function update() {
    document.body.classList.toggle('above-only', box.checked);
    var shown = document.querySelectorAll(box.checked ? '.finding.above' : '.finding').length;
    document.getElementById('shown-count').textContent = String(shown);
  }
  box.addEventListener('change', update);
  update();
})();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _anchor(case: str, k: int) -> str:
    return f"{case}-{k}"


def _class_name(entry: Mapping[str, Any]) -> str:
    return str(entry.get("class_name") or f"class {entry['class']}")


def _finding(doc: Mapping[str, Any], k: int, entry: Mapping[str, Any], views: Mapping[str, bytes],
             operating_point: float) -> str:
    above = float(entry["score"]) >= operating_point
    axes = "zyx" if len(entry["size_mm"]) == 3 else "yx"
    size = " x ".join(f"{v:.1f}" for v in reversed(entry["size_mm"]))
    case = doc["case"]
    thumbs = "".join(f"<figure>{_img(png, f'{view} view of finding {k + 1} of {case}')}"
                     f"<figcaption>{_esc(view)}</figcaption></figure>" for view, png in views.items())
    facts = [("class", _esc(_class_name(entry))), ("score", f"{entry['score']:.3f}"),
             ("size (mm)", f"{size} <span class='meta'>({''.join(reversed(axes))})</span>"),
             ("centre (mm)", ", ".join(f"{v:.1f}" for v in entry["center_world"])),
             ("operating point", f"<span class='{'yes' if above else 'no'}'>{'at or above' if above else 'below'}"
                                 f" {operating_point:g}</span>")]
    rows = "".join(f"<tr><td>{name}</td><td>{value}</td></tr>" for name, value in facts)
    return (f'<div class="finding {"above" if above else "below"}" id="{_esc(_anchor(doc["case"], k))}">'
            f'<div class="thumbs">{thumbs}</div><table class="facts"><tr><th colspan="2">finding {k + 1}</th></tr>'
            f"{rows}</table></div>")


def _case_section(doc: Mapping[str, Any], volume: np.ndarray | None, operating_point: float,
                  max_findings: int) -> tuple[str, list[int]]:
    """The case's section and the indices of the findings it shows."""
    boxes = doc["boxes"]
    shown = list(range(min(len(boxes), max_findings)))
    window = grey_window(volume) if volume is not None and shown else (0.0, 1.0)
    parts = []
    for k in shown:
        entry = boxes[k]
        views = {} if volume is None else thumbnails(volume, doc["spacing"], entry["box"], window,
                                                      COLOURS[int(entry["class"]) % len(COLOURS)])
        parts.append(_finding(doc, k, entry, views, operating_point))
    name = f" <span class='meta'>{_esc(doc['source_name'])}</span>" if doc.get("source_name") else ""
    head = (f'<h2 id="{_esc(doc["case"])}">{_esc(doc["case"])}{name}</h2><p class="meta">{len(boxes)} finding(s), '
            f"shape {tuple(doc['shape'])}, spacing {tuple(round(s, 3) for s in doc['spacing'])} mm"
            + ("" if volume is not None else "; image not found, no thumbnails") + "</p>")
    if not boxes:
        parts.append("<p>No findings.</p>")
    elif len(boxes) > len(shown):
        rest = boxes[len(shown)]["score"]
        parts.append(f"<p class='meta'>{len(boxes) - len(shown)} more finding(s) scoring {rest:.3f} or less are in "
                     f"{_esc(doc['case'])}.json.</p>")
    return head + "".join(parts), shown


def _summary(docs: list[dict[str, Any]], operating_point: float) -> str:
    rows = []
    for doc in docs:
        boxes = doc["boxes"]
        n_above = sum(float(b["score"]) >= operating_point for b in boxes)
        top = boxes[0] if boxes else None
        top_score = f"{top['score']:.3f}" if top else "-"
        rows.append(f'<tr><td><a href="#{_esc(doc["case"])}">{_esc(doc["case"])}</a></td>'
                    f"<td>{_esc(doc.get('source_name', ''))}</td><td class='num'>{len(boxes)}</td>"
                    f"<td class='num'>{n_above}</td><td class='num'>{top_score}</td>"
                    f"<td>{_esc(_class_name(top)) if top else '-'}</td></tr>")
    return ("<table class='summary'><tr><th>case</th><th>source name</th><th>findings</th>"
            f"<th>at or above {operating_point:g}</th><th>top score</th><th>top class</th></tr>"
            + "".join(rows) + "</table>")


def _csv_rows(docs: list[dict[str, Any]], shown: Mapping[str, list[int]]) -> str:
    rows = []
    for doc in docs:
        for k in shown.get(doc["case"], []):
            b = doc["boxes"][k]
            rows.append(f'<tr><td><a href="#{_esc(_anchor(doc["case"], k))}">{_esc(doc["case"])}</a></td>'
                        f"<td class='num'>{b['class']}</td><td>{_esc(b.get('class_name', ''))}</td>"
                        f"<td class='num'>{b['score']:.6f}</td>"
                        + "".join(f"<td class='num'>{v:.3f}</td>" for v in b["center_world"])
                        + "".join(f"<td class='num'>{v:.3f}</td>" for v in b["size_mm"]) + "</tr>")
    dim = len(docs[0]["shape"]) if docs else 3
    axes = "zyx"[3 - dim:]
    head = ("<tr><th>case</th><th>class</th><th>class_name</th><th>score</th>"
            + "".join(f"<th>center_{a}_mm</th>" for a in "xyz"[:dim])
            + "".join(f"<th>size_{a}_mm</th>" for a in axes) + "</tr>")
    return f"<table class='csv'>{head}{''.join(rows)}</table>"


def write_report(out_dir: str | os.PathLike, image_of: Callable[[str], Path | None], operating_point: float = 0.5,
                 max_findings: int = MAX_FINDINGS, title: str | None = None) -> Path:
    """Write ``<out_dir>/report.html`` over every prediction JSON in ``out_dir``.

    ``image_of(case)``: the image file the case was predicted from (its first modality), or None (the
    case is then listed without thumbnails).
    """
    out_dir = Path(out_dir)
    docs = read_predictions(out_dir)
    sections, shown = [], {}
    for doc in docs:
        path = image_of(doc["case"])
        volume = None
        if path is not None and Path(path).is_file():
            volume = read_image(path)[0]
            if tuple(volume.shape) != tuple(doc["shape"]):
                logger.warning(f"{path}: shape {volume.shape} is not the prediction's {tuple(doc['shape'])}; "
                               "the report shows no thumbnails of it")
                volume = None
        section, shown[doc["case"]] = _case_section(doc, volume, operating_point, max_findings)
        sections.append(section)
    total = sum(len(d["boxes"]) for d in docs)
    n_shown = sum(len(v) for v in shown.values())
    title = title or f"Findings of {out_dir.name}"
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head><body>"
            f"<h1>{_esc(title)}</h1><p class='meta'>{len(docs)} case(s), {total} finding(s), {n_shown} shown with "
            f"thumbnails; operating point: score {operating_point:g}. Boxes in mm of the images' own (LPS) world; "
            f"sizes along x, y, z. Data: <a href='{CSV_NAME}'>{CSV_NAME}</a>.</p>"
            f"<p><label><input type='checkbox' id='above-only'> only findings at or above {operating_point:g}</label>"
            f" &middot; <span id='shown-count'>{n_shown}</span> shown</p>"
            f"<h2>Summary</h2>{_summary(docs, operating_point)}{''.join(sections)}"
            f"<h2 id='csv'>Rows of {CSV_NAME}</h2>{_csv_rows(docs, shown)}<script>{SCRIPT}</script></body></html>")
    path = out_dir / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
