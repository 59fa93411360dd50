"""Progress bars that honour ``TQDM_DISABLE`` even where a bar decides for itself when to hide.

tqdm reads ``TQDM_DISABLE`` only for bars that do not pass ``disable=``; this project's bars pass it (hidden for
short loops, other ranks, ``progress=False``), so ``TQDM_DISABLE=1`` (set by the study scripts for their logs, or
by a user) would not reach them. ``hidden(off)`` is ``off`` or that variable set.
"""

from __future__ import annotations

import os


def hidden(off: bool = False) -> bool:
    """``disable=`` for a bar: hidden when ``off`` or when ``TQDM_DISABLE`` is set to a true value."""
    return bool(off) or os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")
