"""Memory and compute model of one Retina U-Net training step, from the plans' topology alone.

Memory: the tensors autograd keeps for the backward pass, counted layer by layer as the network in
`retinaunet.models` builds them (per conv + norm + ReLU two feature maps, residual adds, the U-FPN's
lateral/upsampled/summed/smoothed maps, the head towers and their flattened outputs, the segmentation
logits and loss terms), times ``ACTIVATION_FACTOR`` for the gradients that exist at the same time during
backward, plus weights and gradients (the two Adam moments are allocated after the activations are
freed, so they only matter for networks with few activations). ``ACTIVATION_FACTOR`` and
``FIXED_OVERHEAD`` were calibrated once against CPU peaks measured by `retinaunet.planning.measure`;
``tests/test_memory_model.py`` checks the estimate is within 25% of fresh measurements.

Compute: multiply-accumulates of every convolution, times 3 for forward + backward.

The feature-map sizes and the pyramid levels are the network's own (`feature_map_shapes`,
`pyramid_levels` of `retinaunet.models` with the plans' head levels), so the estimate follows changes of the network.
"""

from __future__ import annotations

import math

from retinaunet.models.backbone import feature_map_shapes, level_channels
from retinaunet.models.network import pyramid_levels
from retinaunet.plans import NetworkPlan, Plans

__all__ = ["activation_elements", "parameter_count", "estimate_memory", "estimate_flops",
           "ACTIVATION_FACTOR", "FIXED_OVERHEAD"]

ACTIVATION_FACTOR = 1.15
FIXED_OVERHEAD = 4 * 2 ** 20  # bytes: anchors, matching, loss bookkeeping


def _channels(net: NetworkPlan) -> list[int]:
    return level_channels(net.start_channels, net.max_channels)


def _sizes(plans: Plans) -> list[int]:
    """Voxels of C0..C5 at the plans' patch, as the network computes them."""
    return [math.prod(s) for s in feature_map_shapes(plans.patch_size, plans.network.strides)]


def activation_elements(plans: Plans, segmentation: bool = True) -> float:
    """Elements of the feature maps kept for backward, for ONE sample of the plans' patch."""
    net, dim = plans.network, plans.dim
    n = _sizes(plans)
    ch = _channels(net)
    fpn, head, convs = net.fpn_channels, net.head_channels, net.head_convs
    k1 = plans.num_classes + 1
    a = plans.anchors.per_position
    total = n[0] * plans.in_channels  # the input itself
    total += 2 * 2 * n[0] * ch[0] + 2 * n[1] * ch[1]  # stem (2 x conv-norm-relu) and C1: conv and relu outputs
    for k, blocks in enumerate(net.blocks_per_stage, start=2):
        proj = n[k] * ch[k]  # strided 1x1 shortcut of the first block (its conv output, kept by the norm)
        if net.block == "bottleneck":
            w = max(ch[k] // 4, 1)
            first = 2 * n[k - 1] * w + 2 * n[k] * w + 2 * n[k] * ch[k] + proj
            rest = 4 * n[k] * w + 2 * n[k] * ch[k]
        else:
            first = 4 * n[k] * ch[k] + proj
            rest = 4 * n[k] * ch[k]
        total += first + rest * (max(int(blocks), 1) - 1)
    outputs = pyramid_levels(net.head_levels, segmentation)
    for k in range(min(outputs), 6):
        total += n[k] * fpn * (2 if k in outputs else 1)  # lateral + upsampled sum; the smoothed output
    for k in net.head_levels:  # two head towers (one map per conv), the logits kept by the loss
        total += 2 * convs * n[k] * head + n[k] * a * (2 * k1 + 2 * dim)
    if segmentation:
        total += 4 * n[0] * k1 + 2 * n[0]  # log-softmax, softmax, one-hot for Dice; the int64 target
    return float(total)


def parameter_count(plans: Plans, segmentation: bool = True) -> int:
    """Approximate number of weights of the network (convolutions; norms and biases are negligible)."""
    net, dim = plans.network, plans.dim
    kv = 3 ** dim
    ch = _channels(net)
    fpn, head, convs = net.fpn_channels, net.head_channels, net.head_convs
    k1 = plans.num_classes + 1
    a = plans.anchors.per_position
    p = kv * (plans.in_channels * ch[0] + ch[0] * ch[0]) + kv * ch[0] * ch[1]
    for k, blocks in enumerate(net.blocks_per_stage, start=2):
        cin, c = ch[k - 1], ch[k]
        if net.block == "bottleneck":
            w = max(c // 4, 1)
            p += cin * w + kv * w * w + w * c + cin * c + (max(int(blocks), 1) - 1) * (c * w + kv * w * w + w * c)
        else:
            p += kv * (cin * c + c * c) + cin * c + (max(int(blocks), 1) - 1) * kv * 2 * c * c
    outputs = pyramid_levels(net.head_levels, segmentation)
    for k in range(min(outputs), 6):
        p += ch[k] * fpn + (kv * fpn * fpn if k in outputs else 0)
    p += 2 * kv * (fpn * head + (convs - 1) * head * head) + kv * head * a * (k1 + 2 * dim)
    return int(p + fpn * k1)


def estimate_memory(plans: Plans, segmentation: bool = True, bytes_per_element: int = 4) -> int:
    """Peak bytes of one training step (forward, backward, Adam step) at the plans' patch and batch."""
    act = ACTIVATION_FACTOR * activation_elements(plans, segmentation) * plans.batch_size * bytes_per_element
    params = parameter_count(plans, segmentation) * bytes_per_element
    # weights + gradients live through backward; the Adam moments are created after activations are freed
    return int(max(act + 2 * params, 4 * params) + FIXED_OVERHEAD)


def estimate_flops(plans: Plans, segmentation: bool = True) -> float:
    """Floating point operations of one training step (2 x MACs of every conv, x3 for backward)."""
    net, dim = plans.network, plans.dim
    kv = 3 ** dim
    n = _sizes(plans)
    ch = _channels(net)
    fpn, head, convs = net.fpn_channels, net.head_channels, net.head_convs
    k1 = plans.num_classes + 1
    a = plans.anchors.per_position
    macs = n[0] * kv * (plans.in_channels * ch[0] + ch[0] * ch[0]) + n[1] * kv * ch[0] * ch[1]
    for k, blocks in enumerate(net.blocks_per_stage, start=2):
        cin, c = ch[k - 1], ch[k]
        if net.block == "bottleneck":
            w = max(c // 4, 1)
            first = n[k - 1] * cin * w + n[k] * (kv * w * w + w * c + cin * c)
            rest = n[k] * (c * w + kv * w * w + w * c)
        else:
            first = n[k] * (kv * (cin * c + c * c) + cin * c)
            rest = n[k] * kv * 2 * c * c
        macs += first + rest * (max(int(blocks), 1) - 1)
    outputs = pyramid_levels(net.head_levels, segmentation)
    for k in range(min(outputs), 6):
        macs += n[k] * (ch[k] * fpn + (kv * fpn * fpn if k in outputs else 0))
    for k in net.head_levels:
        macs += n[k] * kv * (2 * (fpn * head + (convs - 1) * head * head) + head * a * (k1 + 2 * dim))
    if segmentation:
        macs += n[0] * fpn * k1
    return float(6 * macs * plans.batch_size)
