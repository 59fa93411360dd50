"""Memory and compute model of one Retina U-Net training step, from the plans' topology alone.

Memory: the tensors autograd keeps for the backward pass, counted layer by layer as the network in
`retinaunet.models` builds them (per conv + norm + ReLU two feature maps, residual adds, the U-FPN's
lateral/upsampled/summed/smoothed maps, the head towers and their flattened outputs, the segmentation
logits and loss terms), times ``ACTIVATION_FACTOR`` for the gradients that exist at the same time during
backward, plus weights and gradients (the two Adam moments are allocated after the activations are
freed, so they only matter for networks with few activations). ``ACTIVATION_FACTOR`` and
``FIXED_OVERHEAD`` were calibrated once against CPU peaks measured by `planning.measure`;
``tests/test_memory_model.py`` checks the estimate is within 25% of fresh measurements.

Compute: multiply-accumulates of every convolution, times 3 for forward + backward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["level_shapes", "activation_elements", "parameter_count", "estimate_memory", "estimate_flops",
           "ACTIVATION_FACTOR", "FIXED_OVERHEAD"]

ACTIVATION_FACTOR = 1.15
FIXED_OVERHEAD = 4 * 2 ** 20  # bytes: anchors, matching, loss bookkeeping
HEAD_LEVELS = (2, 3, 4, 5)


def level_shapes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[list[int]]:
    """Spatial shape of C0..C5 for a patch (ceil division per stride, as strided convs with padding)."""
    shapes = [list(patch_size)]
    for s in strides:
        shapes.append([math.ceil(n / k) for n, k in zip(shapes[-1], s)])
    return shapes


def _channels(net: Mapping[str, Any]) -> list[int]:
    return [min(int(net["start_channels"]) * 2 ** k, int(net["max_channels"])) for k in range(6)]


def _num_anchors(plans: Mapping[str, Any]) -> int:
    anchors = plans.get("anchors", {})
    return len(anchors.get("scales", [1, 2, 3])) * len(anchors.get("ratios", [1, 2, 3]))


def activation_elements(plans: Mapping[str, Any], segmentation: bool = True) -> float:
    """Elements of the feature maps kept for backward, for ONE sample of the plans' patch."""
    net, dim = plans["network"], int(plans["dim"])
    n = [math.prod(s) for s in level_shapes(plans["patch_size"], net["strides"])]
    ch = _channels(net)
    fpn, head, convs = int(net["fpn_channels"]), int(net["head_channels"]), int(net["head_convs"])
    k1 = int(plans["num_classes"]) + 1
    a = _num_anchors(plans)
    total = n[0] * int(plans["in_channels"])  # the input itself
    total += 2 * 2 * n[0] * ch[0] + 2 * n[1] * ch[1]  # stem (2 x conv-norm-relu) and C1: conv and relu outputs
    for k, blocks in enumerate(net["blocks_per_stage"], start=2):
        proj = n[k] * ch[k]  # strided 1x1 shortcut of the first block (its conv output, kept by the norm)
        if net["block"] == "bottleneck":
            w = max(ch[k] // 4, 1)
            first = 2 * n[k - 1] * w + 2 * n[k] * w + 2 * n[k] * ch[k] + proj
            rest = 4 * n[k] * w + 2 * n[k] * ch[k]
        else:
            first = 4 * n[k] * ch[k] + proj
            rest = 4 * n[k] * ch[k]
        total += first + rest * (max(int(blocks), 1) - 1)
    for k in range(0 if segmentation else min(net.get("head_levels", HEAD_LEVELS)), 6):
        total += 2 * n[k] * fpn  # lateral + upsampled sum (kept by the smoothing conv), smoothed output
    for k in net.get("head_levels", HEAD_LEVELS):  # two head towers (one map per conv), the logits kept by the loss
        total += 2 * convs * n[k] * head + n[k] * a * (2 * k1 + 2 * dim)
    if segmentation:
        total += 4 * n[0] * k1 + 2 * n[0]  # log-softmax, softmax, one-hot for Dice; the int64 target
    return float(total)


def parameter_count(plans: Mapping[str, Any], segmentation: bool = True) -> int:
    """Approximate number of weights of the network (convolutions; norms and biases are negligible)."""
    net, dim = plans["network"], int(plans["dim"])
    kv = 3 ** dim
    ch = _channels(net)
    fpn, head, convs = int(net["fpn_channels"]), int(net["head_channels"]), int(net["head_convs"])
    k1 = int(plans["num_classes"]) + 1
    a = _num_anchors(plans)
    p = kv * (int(plans["in_channels"]) * ch[0] + ch[0] * ch[0]) + kv * ch[0] * ch[1]
    for k, blocks in enumerate(net["blocks_per_stage"], start=2):
        cin, c = ch[k - 1], ch[k]
        if net["block"] == "bottleneck":
            w = max(c // 4, 1)
            p += cin * w + kv * w * w + w * c + cin * c + (max(int(blocks), 1) - 1) * (c * w + kv * w * w + w * c)
        else:
            p += kv * (cin * c + c * c) + cin * c + (max(int(blocks), 1) - 1) * kv * 2 * c * c
    for k in range(0 if segmentation else min(net.get("head_levels", HEAD_LEVELS)), 6):
        p += ch[k] * fpn + kv * fpn * fpn
    p += 2 * kv * (fpn * head + (convs - 1) * head * head) + kv * head * a * (k1 + 2 * dim)
    return int(p + fpn * k1)


def estimate_memory(plans: Mapping[str, Any], segmentation: bool = True, bytes_per_element: int = 4) -> int:
    """Peak bytes of one training step (forward, backward, Adam step) at the plans' patch and batch."""
    act = ACTIVATION_FACTOR * activation_elements(plans, segmentation) * int(plans["batch_size"]) * bytes_per_element
    params = parameter_count(plans, segmentation) * bytes_per_element
    # weights + gradients live through backward; the Adam moments are created after activations are freed
    return int(max(act + 2 * params, 4 * params) + FIXED_OVERHEAD)


def estimate_flops(plans: Mapping[str, Any], segmentation: bool = True) -> float:
    """Floating point operations of one training step (2 x MACs of every conv, x3 for backward)."""
    net, dim = plans["network"], int(plans["dim"])
    kv = 3 ** dim
    n = [math.prod(s) for s in level_shapes(plans["patch_size"], net["strides"])]
    ch = _channels(net)
    fpn, head, convs = int(net["fpn_channels"]), int(net["head_channels"]), int(net["head_convs"])
    k1 = int(plans["num_classes"]) + 1
    a = _num_anchors(plans)
    macs = n[0] * kv * (int(plans["in_channels"]) * ch[0] + ch[0] * ch[0]) + n[1] * kv * ch[0] * ch[1]
    for k, blocks in enumerate(net["blocks_per_stage"], start=2):
        cin, c = ch[k - 1], ch[k]
        if net["block"] == "bottleneck":
            w = max(c // 4, 1)
            first = n[k - 1] * cin * w + n[k] * (kv * w * w + w * c + cin * c)
            rest = n[k] * (c * w + kv * w * w + w * c)
        else:
            first = n[k] * (kv * (cin * c + c * c) + cin * c)
            rest = n[k] * kv * 2 * c * c
        macs += first + rest * (max(int(blocks), 1) - 1)
    for k in range(0 if segmentation else min(net.get("head_levels", HEAD_LEVELS)), 6):
        macs += n[k] * (ch[k] * fpn + kv * fpn * fpn)
    for k in net.get("head_levels", HEAD_LEVELS):
        macs += n[k] * kv * (2 * (fpn * head + (convs - 1) * head * head) + head * a * (k1 + 2 * dim))
    if segmentation:
        macs += n[0] * fpn * k1
    return float(6 * macs * int(plans["batch_size"]))
