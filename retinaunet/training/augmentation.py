"""Data augmentation for detection patches with batchgenerators (2D and 3D).

Spatial: rotation, scaling, elastic deformation (2D only) in one resampling step, then mirroring. The loader
reads a region larger than the patch (:func:`sample_size`) so that a rotated or zoomed-out patch is filled
with image, and the spatial transform crops the patch from the region's centre (``random_crop=False``). The
instance map follows with nearest-neighbour interpolation (order 0); boxes are derived from it afterwards.
Intensity: multiplicative brightness, contrast, gamma and Gaussian noise, each with a small probability.
3D plans with anisotropic spacing rotate only in the plane of the fine axes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from batchgenerators.augmentations.utils import (
    create_matrix_rotation_2d,
    create_matrix_rotation_x_3d,
    create_matrix_rotation_y_3d,
    create_matrix_rotation_z_3d,
)
from batchgenerators.transforms.abstract_transforms import AbstractTransform
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianNoiseTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

from retinaunet.plans import Plans

ANISOTROPY_RATIO = 3.0  # coarsest / finest spacing above which a 3D plan rotates only in-plane
NO_ROTATION = (0.0, 0.0)


@dataclass(frozen=True)
class AugmentationParams:
    """Probabilities (per patch) and ranges of every augmentation. Angles in radians.

    ``rotation`` holds one range per rotation axis: one (2D), or three (3D: about array axes 0, 1, 2, as
    batchgenerators' angle_x, angle_y, angle_z). ``scale`` > 1 zooms out (the patch covers more image).
    """

    dim: int
    rotation: tuple[tuple[float, float], ...]
    p_rotation: float = 0.3
    scale: tuple[float, float] = (0.85, 1.25)
    p_scale: float = 0.3
    p_elastic: float = 0.0
    elastic_alpha: tuple[float, float] = (0.0, 450.0)
    elastic_sigma: tuple[float, float] = (10.0, 13.0)
    mirror_axes: tuple[int, ...] = field(default=())
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.15
    gamma: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)

    @property
    def spatial(self) -> bool:
        """Whether the resampling step (rotation, scaling, elastic) can change a patch."""
        return self.p_rotation > 0 or self.p_scale > 0 or self.p_elastic > 0

    def without_intensity(self) -> AugmentationParams:
        return replace(self, p_brightness=0.0, p_contrast=0.0, p_gamma=0.0, p_noise=0.0)

    def without_spatial(self) -> AugmentationParams:
        return replace(self, p_rotation=0.0, p_scale=0.0, p_elastic=0.0, mirror_axes=())


def default_augmentation(plans: Plans) -> AugmentationParams:
    """Augmentation for a plan: full in-plane rotation in 2D (and for anisotropic 3D), +-30 degrees about
    every axis for isotropic 3D, elastic deformation in 2D only, mirroring along every network axis."""
    dim = plans.dim
    full = (-math.pi, math.pi)
    if dim == 2:
        rotation: tuple[tuple[float, float], ...] = (full,)
    else:
        spacing = np.asarray(plans.target_spacing[-3:], dtype=float)
        if spacing.max() / spacing.min() > ANISOTROPY_RATIO:
            coarse = int(np.argmax(spacing))
            rotation = tuple(full if axis == coarse else NO_ROTATION for axis in range(3))
        else:
            deg30 = math.pi / 6
            rotation = ((-deg30, deg30),) * 3
    return AugmentationParams(dim=dim, rotation=rotation, p_elastic=0.2 if dim == 2 else 0.0,
                              mirror_axes=tuple(range(dim)))


def _rotation_matrices(params: AugmentationParams, steps: int = 9) -> list[np.ndarray]:
    """Rotation matrices on a grid over the allowed angles (including the range ends)."""
    grids = [np.unique(np.concatenate([np.linspace(lo, hi, steps), [min(max(0.0, lo), hi)]]))
             for lo, hi in params.rotation]
    if params.p_rotation <= 0:
        grids = [np.zeros(1) for _ in params.rotation]
    if params.dim == 2:
        return [create_matrix_rotation_2d(a) for a in grids[0]]
    mats = []
    for ax, ay, az in itertools.product(*grids):
        m = create_matrix_rotation_x_3d(ax, np.identity(3))
        m = create_matrix_rotation_y_3d(ay, m)
        mats.append(create_matrix_rotation_z_3d(az, m))
    return mats


def elastic_margin(params: AugmentationParams) -> float:
    """About three standard deviations of the largest elastic displacement, in voxels."""
    if params.p_elastic <= 0:
        return 0.0
    # uniform(-1, 1) noise (std 1/sqrt 3) smoothed by a Gaussian of sigma s keeps a share (4 pi s^2)^(-d/4)
    # of its standard deviation
    std = params.elastic_alpha[1] / math.sqrt(3) * (4 * math.pi * params.elastic_sigma[0] ** 2) ** (-params.dim / 4)
    return 3.0 * std


def sample_size(patch_size: Sequence[int], params: AugmentationParams | None) -> list[int]:
    """Size of the region to read so that the augmented patch (rotated, zoomed out, deformed) stays inside.

    Equals ``patch_size`` without spatial augmentation.
    """
    patch = np.asarray(patch_size, dtype=float)
    if params is None or not params.spatial:
        return [int(p) for p in patch_size]
    corners = np.array(list(itertools.product(*[(-h, h) for h in patch / 2])))
    extent = patch.copy()
    for m in _rotation_matrices(params):
        # batchgenerators rotates coordinates as coords @ m
        extent = np.maximum(extent, 2 * np.abs(corners @ m).max(axis=0))
    if params.p_scale > 0:
        extent = extent * max(1.0, params.scale[1])
    extent = extent + 2 * elastic_margin(params)
    return [int(math.ceil(e - 1e-6)) for e in extent]


def build_transforms(patch_size: Sequence[int], params: AugmentationParams | None) -> list[AbstractTransform]:
    """batchgenerators transforms from a region batch ("data" [B, C, *R], "seg" [B, 1, *R] instance ids) to a
    patch batch ("data" [B, C, *P], "seg" [B, 1, *P]). ``params=None``: no augmentation (the region must then
    be the patch)."""
    if params is None:
        return []
    patch = [int(p) for p in patch_size]
    if len(patch) != params.dim:
        raise ValueError(f"patch_size {patch} does not match augmentation for {params.dim}D")
    rot = list(params.rotation) + [NO_ROTATION] * (3 - len(params.rotation))
    transforms: list[AbstractTransform] = [SpatialTransform(
        patch, patch_center_dist_from_border=None, random_crop=False,
        do_elastic_deform=params.p_elastic > 0, alpha=params.elastic_alpha, sigma=params.elastic_sigma,
        p_el_per_sample=params.p_elastic,
        do_rotation=params.p_rotation > 0, angle_x=rot[0], angle_y=rot[1], angle_z=rot[2],
        p_rot_per_sample=params.p_rotation,
        do_scale=params.p_scale > 0, scale=params.scale, p_scale_per_sample=params.p_scale,
        border_mode_data="constant", border_cval_data=0, order_data=3,
        border_mode_seg="constant", border_cval_seg=0, order_seg=0)]
    if params.p_noise > 0:
        transforms.append(GaussianNoiseTransform(params.noise_variance, p_per_sample=params.p_noise))
    if params.p_brightness > 0:
        transforms.append(BrightnessMultiplicativeTransform(params.brightness, per_channel=False,
                                                            p_per_sample=params.p_brightness))
    if params.p_contrast > 0:
        transforms.append(ContrastAugmentationTransform(params.contrast, per_channel=False,
                                                        p_per_sample=params.p_contrast))
    if params.p_gamma > 0:
        transforms.append(GammaTransform(params.gamma, retain_stats=True, per_channel=False,
                                         p_per_sample=params.p_gamma))
    if params.mirror_axes:
        transforms.append(MirrorTransform(params.mirror_axes))
    return transforms
