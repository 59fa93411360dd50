"""Shards of a cohort: ``--shard i/n`` splits sorted case names over n machines writing to one folder."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["in_shard", "parse_shard", "shard_items"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; ValueError with a one-line reason otherwise."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard '{text}' must look like i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard '{text}': need 0 <= i < n")
    return i, n


def shard_items(names: Iterable[str], shard: tuple[int, int] = (0, 1)) -> list[str]:
    """Every n-th of the sorted names starting at i: the shards are disjoint and cover all names."""
    i, n = shard
    return sorted(names)[i::n]


def in_shard(names: Iterable[str], shard: tuple[int, int] = (0, 1)) -> set[str]:
    """The names of ``shard`` as a set (for filtering lists kept in another order)."""
    return set(shard_items(names, shard))
