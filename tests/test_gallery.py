"""gallery.png panels: which slice and which boxes a case shows."""

from __future__ import annotations

import numpy as np
from retinaunet.inference.gallery import gallery_panel, write_gallery


def _panel(case, image, entries):
    """entries: (box, score, class) as a prediction JSON lists them."""
    boxes = np.asarray([e[0] for e in entries], dtype=float)
    return gallery_panel(case, image, boxes, [e[1] for e in entries], [e[2] for e in entries])


def test_panel_3d_shows_the_top_box_slice_and_the_boxes_crossing_it(tmp_path):
    image = np.arange(10 * 20 * 30, dtype=np.float32).reshape(10, 20, 30)
    entries = [([4, 2, 3, 8, 12, 13], 0.9, 1),   # top box: z 4..8 -> slice 6
               ([5, 10, 10, 7, 18, 20], 0.7, 0),  # crosses slice 6
               ([0, 0, 0, 3, 5, 5], 0.8, 0),      # does not reach slice 6
               ([6, 1, 1, 7, 4, 4], 0.3, 1)]      # below the score floor
    panel = _panel("case_a", image, entries)
    assert panel.slice_index == 6 and np.array_equal(panel.image, image[6])
    assert panel.boxes.tolist() == [[2, 3, 12, 13], [10, 10, 18, 20]] and panel.labels.tolist() == [1, 0]
    empty = _panel("case_b", image, [])
    assert empty.slice_index == 5 and empty.boxes.shape == (0, 4)
    flat = _panel("case_c", image[0], [([1, 2, 5, 6], 0.6, 0)])
    assert flat.slice_index is None and flat.boxes.tolist() == [[1, 2, 5, 6]]
    out = write_gallery([panel, empty, flat], ["filled", "hollow"], tmp_path / "gallery.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
