"""Shared fixtures: small raw datasets written in tmp folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject.toml): one single-threaded worker per core, at most 4 (the heaviest tests train
    networks and hold a few GB each)."""
    return max(1, min(4, os.cpu_count() or 1))


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty data root, exported as RUD_DATA."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RUD_DATA", str(root))
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(0)
