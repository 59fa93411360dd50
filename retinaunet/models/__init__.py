"""Networks and detectors: `build_model(name, plans)` gives an nn.Module with `compute_losses` and
`predict`; see `available_models()` for the names."""

from __future__ import annotations

from retinaunet.models.anchor_detector import AnchorDetector
from retinaunet.models.det_unet import DetUNet
from retinaunet.models.detector import Detections, Detector
from retinaunet.models.network import DetectionNetwork, NetworkOutput
from retinaunet.models.registry import available_models, build_model, get_model, register_model
from retinaunet.models.retina_unet import RetinaNet, RetinaUNet
from retinaunet.models.two_stage import FasterRCNN, MaskRCNN, UFasterRCNN

__all__ = [
    "AnchorDetector",
    "DetUNet",
    "DetectionNetwork",
    "Detections",
    "Detector",
    "FasterRCNN",
    "MaskRCNN",
    "NetworkOutput",
    "RetinaNet",
    "RetinaUNet",
    "UFasterRCNN",
    "available_models",
    "build_model",
    "get_model",
    "register_model",
]
