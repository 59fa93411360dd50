"""The memory model of a training step against peaks measured on the CPU, and its basic behaviour."""

from __future__ import annotations

import pytest
from retinaunet.planning.budget import cpu_budget
from retinaunet.planning.measure import measure_steps
from retinaunet.planning.memory import activation_elements, estimate_flops, estimate_memory, parameter_count
from retinaunet.planning.topology import network_template, plan_strides

from retinaunet.models import build_model
from retinaunet.plans import NetworkPlan, make_test_plans


def _plans(dim, patch, batch, spacing=None):
    plans = make_test_plans(dim=dim, patch_size=patch)
    plans.batch_size = batch
    strides = plan_strides(patch, spacing or [1] * dim)
    plans.network = NetworkPlan(strides=strides, **network_template(dim, cpu_budget(dim)))
    return plans


def test_estimate_within_25_percent_of_measured_cpu_peak():
    configs = [_plans(2, [128, 128], 8), _plans(2, [192, 192], 2), _plans(3, [32, 64, 64], 2, [2.5, 0.8, 0.8])]
    measured = measure_steps(configs)
    for plans, (peak, _) in zip(configs, measured):
        ratio = estimate_memory(plans) / peak
        assert 0.75 <= ratio <= 1.25, (plans.patch_size, plans.batch_size, peak, ratio)


def test_parameter_count_matches_the_network():
    for plans in (_plans(2, [64, 64], 2), _plans(3, [16, 32, 32], 1)):
        real = sum(p.numel() for p in build_model("retina_unet", plans).parameters())
        assert parameter_count(plans) == pytest.approx(real, rel=0.02)


def test_estimates_scale_with_batch_and_patch():
    small, double_batch, double_patch = _plans(2, [64, 64], 2), _plans(2, [64, 64], 4), _plans(2, [128, 128], 2)
    assert activation_elements(double_patch) == pytest.approx(4 * activation_elements(small), rel=0.05)
    assert estimate_flops(double_batch) == pytest.approx(2 * estimate_flops(small))
    assert estimate_memory(small) < estimate_memory(double_batch) < 2 * estimate_memory(small)
