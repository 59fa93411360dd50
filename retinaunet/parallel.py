"""Run a function over cases in a spawn-safe process pool with a progress bar, collecting errors."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tqdm import tqdm

from retinaunet.progress import hidden

__all__ = ["run_parallel"]


def _work(args: tuple[Callable, Any]) -> tuple[Any, Any, str | None]:
    fn, item = args
    try:
        return item, fn(item), None
    except Exception as err:  # noqa: BLE001 - reported by the caller with the case name
        return item, None, f"{type(err).__name__}: {err}"


def run_parallel(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, desc: str
                 ) -> Iterator[tuple[Any, Any, str | None]]:
    """Yield ``(item, result, error)`` per item as they finish; ``workers`` processes (0: in process).

    ``fn`` must be a module-level function (it is pickled for the workers). An exception becomes a
    one-line ``error`` string, so one failing case does not stop the others.
    """
    bar = tqdm(total=len(items), desc=desc, disable=hidden(len(items) < 2), leave=False)
    try:
        if workers <= 0 or len(items) < 2:
            for item in items:
                yield _work((fn, item))
                bar.update()
            return
        with mp.get_context("spawn").Pool(min(workers, len(items))) as pool:
            for out in pool.imap_unordered(_work, [(fn, it) for it in items]):
                yield out
                bar.update()
    finally:
        bar.close()
