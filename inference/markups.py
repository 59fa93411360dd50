"""3D Slicer markups: one ROI (box) per predicted box, beside each case's JSON as ``<case>.mrk.json``.

Dragging the scan and this file into Slicer shows every box, labelled ``<class> <score>``. The file
follows Slicer's markups schema (v1.0.3): each ROI lies in LPS millimetres (the world of the prediction
JSON, SimpleITK's), its ``center`` is the box's ``center_world``, its ``orientation`` (row-major 3x3,
columns = ROI axes) is the image's direction matrix and its ``size`` the box's extent in mm along the
image's x, y, z axes. Plain JSON; no Slicer needed to write it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retinaunet.io import write_json

__all__ = ["MARKUPS_SCHEMA", "MARKUPS_SUFFIX", "box_label", "case_markups", "write_case_markups"]

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                  "Schema/markups-schema-v1.0.3.json#")
MARKUPS_SUFFIX = ".mrk.json"


def box_label(entry: dict[str, Any]) -> str:
    """``"<class name or number> <score>"`` of a prediction JSON's box entry."""
    return f"{entry.get('class_name') or entry['class']} {entry['score']:.2f}"


def _roi(k: int, entry: dict[str, Any], direction: Sequence[float]) -> dict[str, Any]:
    centre = [float(v) for v in entry["center_world"]]
    size_xyz = [float(v) for v in reversed(entry["size_mm"])]  # size_mm is in array order (z, y, x)
    label = box_label(entry)
    return {
        "type": "ROI", "coordinateSystem": "LPS", "coordinateUnits": "mm", "locked": True,
        "fixedNumberOfControlPoints": True, "labelFormat": "%N-%d", "lastUsedControlPointNumber": 1,
        "roiType": "Box", "insideOut": False, "center": centre, "orientation": [float(v) for v in direction],
        "size": size_xyz,
        "controlPoints": [{
            "id": str(k + 1), "label": label, "description": f"box {k} of the prediction JSON, class {entry['class']}",
            "associatedNodeID": "", "position": centre, "orientation": [float(v) for v in direction],
            "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"}],
        "measurements": [],
        "display": {"visibility": True, "textScale": 3.0, "propertiesLabelVisibility": True,
                    "pointLabelsVisibility": True, "glyphType": "Sphere3D"},
    }


def case_markups(doc: dict[str, Any]) -> dict[str, Any]:
    """The markups document of one prediction JSON (a 3D case): one ROI per box, in the JSON's order."""
    if len(doc["shape"]) != 3:
        raise ValueError(f"{doc['case']}: markups are written for 3D images only")
    return {"@schema": MARKUPS_SCHEMA,
            "markups": [_roi(k, entry, doc["direction"]) for k, entry in enumerate(doc["boxes"])]}


def write_case_markups(doc: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/<case>.mrk.json`` (atomically) for a prediction JSON's document."""
    return write_json(case_markups(doc), Path(out_dir) / f"{doc['case']}{MARKUPS_SUFFIX}")
