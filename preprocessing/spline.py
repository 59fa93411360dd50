"""Numba kernels for separable B-spline resampling along one axis of a [A, N, B] view.

`prefilter_axis` turns samples into cubic B-spline coefficients (the same recursive filter and
whole-sample mirror boundary as ``scipy.ndimage.spline_filter1d(mode="mirror")``), in place;
`apply_taps` evaluates ``out[a, j, b] = sum_k w[j, k] * c[a, idx[j, k], b]``.
Both run along the middle axis of a 3D view, with the contiguous last axis innermost, so a volume
is filtered along z slice by slice rather than line by line (strided lines are what make scipy slow).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy import ndimage

__all__ = ["prefilter_axis", "apply_taps"]

_POLE = math.sqrt(3.0) - 2.0  # the single pole of the cubic B-spline prefilter
_GAIN = (1.0 - _POLE) * (1.0 - 1.0 / _POLE)  # = 6
_HORIZON = int(math.ceil(math.log(1e-9) / math.log(abs(_POLE))))  # truncation of the causal init


@njit(cache=True)
def _prefilter(c: np.ndarray, z: float, gain: float, horizon: int) -> None:  # pragma: no cover - jit
    na, n, nb = c.shape
    if n == 1:
        return
    for ia in range(na):
        for k in range(n):
            for ib in range(nb):
                c[ia, k, ib] *= gain
        # causal initialisation for the mirror boundary
        for ib in range(nb):
            if n <= horizon:
                zn = z ** (n - 1)
                s = c[ia, 0, ib] + zn * c[ia, n - 1, ib]
                z2n = zn * zn
                zk = z
                for k in range(1, n - 1):
                    s += (zk + z2n / zk) * c[ia, k, ib]
                    zk *= z
                c[ia, 0, ib] = s / (1.0 - z2n)
            else:
                s = c[ia, 0, ib]
                zk = z
                for k in range(1, horizon):
                    s += zk * c[ia, k, ib]
                    zk *= z
                c[ia, 0, ib] = s
        for k in range(1, n):
            for ib in range(nb):
                c[ia, k, ib] += z * c[ia, k - 1, ib]
        # anticausal initialisation and recursion
        for ib in range(nb):
            c[ia, n - 1, ib] = (z / (z * z - 1.0)) * (c[ia, n - 1, ib] + z * c[ia, n - 2, ib])
        for k in range(n - 2, -1, -1):
            for ib in range(nb):
                c[ia, k, ib] = z * (c[ia, k + 1, ib] - c[ia, k, ib])


@njit(cache=True)
def _taps(c: np.ndarray, idx: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    na, _, nb = c.shape
    n_out, nt = idx.shape
    for ia in range(na):
        for j in range(n_out):
            i0 = idx[j, 0]
            w0 = w[j, 0]
            for ib in range(nb):
                out[ia, j, ib] = w0 * c[ia, i0, ib]
            for k in range(1, nt):
                ik = idx[j, k]
                wk = w[j, k]
                for ib in range(nb):
                    out[ia, j, ib] += wk * c[ia, ik, ib]


@njit(cache=True)
def _taps_last(c: np.ndarray, idx: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    na, _ = c.shape
    n_out, nt = idx.shape
    for ia in range(na):
        for j in range(n_out):
            acc = np.float32(0.0)
            for k in range(nt):
                acc += w[j, k] * c[ia, idx[j, k]]
            out[ia, j] = acc


def prefilter_axis(c3: np.ndarray) -> None:
    """Cubic B-spline prefilter of ``c3: float32[A, N, B]`` along N, in place (mirror boundary)."""
    if c3.shape[2] == 1:  # contiguous lines: scipy's line filter is the fast path
        ndimage.spline_filter1d(c3, order=3, axis=1, mode="mirror", output=c3)
    else:
        _prefilter(c3, _POLE, _GAIN, _HORIZON)


def apply_taps(c3: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted gather along N: ``c3: float32[A, N, B]``, ``idx, w: [N_out, T]`` -> float32[A, N_out, B]."""
    out = np.empty((c3.shape[0], idx.shape[0], c3.shape[2]), dtype=np.float32)
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    w = np.ascontiguousarray(w, dtype=np.float32)
    if c3.shape[2] == 1:
        _taps_last(c3[:, :, 0], idx, w, out[:, :, 0])
    else:
        _taps(c3, idx, w, out)
    return out
