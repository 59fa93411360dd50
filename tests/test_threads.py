"""Thread counts: the free cores, at least one; an explicit count wins."""

from __future__ import annotations

import pytest

from retinaunet.threads import available_cpus, fair_threads


def test_fair_share_leaves_busy_cores_to_others():
    assert fair_threads(cpus=2, busy=0.0) == 2
    assert fair_threads(cpus=2, busy=1.0) == 1  # beside one busy process: one core each
    assert fair_threads(cpus=2, busy=7.0) == 1
    assert fair_threads(cpus=16, busy=4.2) == 12
    assert fair_threads(3, cpus=2, busy=9.0) == 3
    with pytest.raises(ValueError, match="--threads"):
        fair_threads(0)


def test_machine_readings_are_sane():
    n = fair_threads()
    assert 1 <= n <= available_cpus()
