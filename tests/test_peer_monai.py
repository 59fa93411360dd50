"""scripts/peer_monai.py: box conversions to MONAI's conventions and back, exact; a tiny training and prediction
run whose JSONs rud_evaluate reads."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retinaunet.coordinates import CaseCoordinates

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
spec = importlib.util.spec_from_file_location("peer_monai", ROOT / "scripts" / "peer_monai.py")
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)


def test_boxes_round_trip_exactly():
    box = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])  # z0, y0, x0, z1, y1, x1
    np.testing.assert_array_equal(peer.to_monai_boxes(box), [[3.0, 2.0, 1.0, 6.0, 5.0, 4.0]])  # x0 y0 z0 x1 y1 z1
    np.testing.assert_array_equal(peer.to_monai_boxes([[1.0, 2.0, 3.0, 4.0]]), [[2.0, 1.0, 4.0, 3.0]])  # 2D
    rng = np.random.default_rng(0)
    for dim in (2, 3):
        lo = rng.uniform(0, 50, (20, dim))
        boxes = np.concatenate([lo, lo + rng.uniform(0.1, 30, (20, dim))], axis=1)
        np.testing.assert_array_equal(peer.from_monai_boxes(peer.to_monai_boxes(boxes)), boxes)


@pytest.mark.parametrize("dim", [2, 3])
def test_monai_reads_a_converted_box_as_the_same_voxels(dim):
    from monai.apps.detection.transforms.box_ops import convert_box_to_mask, convert_mask_to_box
    from monai.data.box_utils import convert_box_mode

    shape = (7, 11, 13)[-dim:]
    box = np.array([[2, 3, 4, 5, 9, 6][i] for i in ([0, 1, 2, 3, 4, 5] if dim == 3 else [1, 2, 4, 5])])[None]
    ours = np.zeros((1, *shape), dtype=np.int16)  # this project's array: [C, (Z,) Y, X]
    ours[(0, *[slice(int(box[0, a]), int(box[0, dim + a])) for a in range(dim)])] = 1
    theirs = peer.to_monai_image(ours)  # MONAI's [C, X, Y, (Z)]
    mbox = peer.to_monai_boxes(box)
    mask = convert_box_to_mask(mbox, np.array([1]), theirs.shape[1:], bg_label=0)
    np.testing.assert_array_equal(mask[0], theirs[0])  # the same voxels, half-open on both sides
    back, _ = convert_mask_to_box(theirs - 1, bg_label=-1)  # channel 0 holds 0 inside the box, -1 outside
    np.testing.assert_array_equal(peer.from_monai_boxes(np.asarray(back)), box)
    mode = "cccwhd" if dim == 3 else "ccwh"
    centred = np.asarray(convert_box_mode(mbox, src_mode="xyzxyz" if dim == 3 else "xyxy", dst_mode=mode))
    np.testing.assert_allclose(centred[0, :dim], (mbox[0, :dim] + mbox[0, dim:]) / 2)
    np.testing.assert_allclose(centred[0, dim:], mbox[0, dim:] - mbox[0, :dim])


def test_a_monai_detection_maps_back_to_the_original_image():
    props = {"case": "c", "original": {"shape": [40, 60, 50], "spacing": [2.5, 0.8, 0.6], "origin": [0.0, 0.0, 0.0],
                                       "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]},
             "crop": [[4, 36], [10, 50], [0, 50]], "spacing": [5.0, 0.8, 1.2], "shape": [16, 40, 25]}
    detection = np.array([[3.0, 2.0, 1.0, 7.0, 10.0, 4.0]])  # MONAI xyzxyz on the preprocessed grid
    original = CaseCoordinates.from_props(props).to_original(peer.from_monai_boxes(detection))
    np.testing.assert_array_equal(original, [[6.0, 12.0, 6.0, 12.0, 20.0, 14.0]])  # z, y, x of the raw image


def test_recipe_settings_follow_the_spacing():
    tutorial = peer.TUTORIAL_SPACING_XYZ
    assert peer.anchor_shapes(tutorial) == [[6, 8, 4], [8, 6, 5], [10, 10, 6]]
    assert peer.conv1_stride(tutorial) == [2, 2, 1] and peer.conv1_stride([0.8, 0.8, 1.0]) == [2, 2, 2]
    assert peer.window_size(tutorial) == [512, 512, 208]
    assert peer.monai_spacing([2.5, 0.8, 0.7]) == [0.7, 0.8, 2.5]
    assert peer.learning_rate(0.0) == pytest.approx(1e-3) and peer.learning_rate(0.5) == 1e-2
    assert peer.learning_rate(161 / 300) == pytest.approx(1e-3)


def test_peer_trains_and_writes_jsons_that_rud_evaluate_reads(tmp_path):
    env = {"RUD_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1", "PATH": f"{BIN}:/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*args], cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=600)

    for cmd in (["rud_example", "spheres", "--num-train", "10", "--num-test", "1", "--quiet"],
                ["rud_plan", "-t", "104"], ["rud_preprocess", "-t", "104", "--workers", "0"]):
        assert run(str(BIN / cmd[0]), *cmd[1:]).returncode == 0, cmd
    proc = run(sys.executable, str(ROOT / "scripts" / "peer_monai.py"), "-t", "104", "--minutes", "0.01",
               "--validations", "0", "-o", "peer")
    assert proc.returncode == 0, proc.stderr[-2000:]
    docs = sorted((tmp_path / "peer").glob("case_*.json"))
    assert len(docs) == 1 and (tmp_path / "peer" / "predictions.csv").is_file()
    for path in docs:
        doc = json.loads(path.read_text())
        for b in doc["boxes"]:
            box = np.asarray(b["box"])
            assert len(box) == 6 and np.all(box[:3] <= box[3:]) and np.all(box[3:] <= doc["shape"])
    log = json.loads((tmp_path / "data" / "Task104_ToySpheres" / "models" / "monai_retinanet_3d" / "fold0" /
                      "training_log.json").read_text())
    assert log["steps"] >= 1 and log["checks"][-1]["val_map"] is None  # no validation asked for: the last weights
    curves_spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "scripts" / "learning_curves.py")
    curves = importlib.util.module_from_spec(curves_spec)
    curves_spec.loader.exec_module(curves)
    assert curves.monai_steps(tmp_path / "peer") == {"steps": log["steps"]}  # a learning-curve cell's steps
    assert curves.monai_steps(tmp_path) == {}  # no prediction names a model folder
    proc = run(str(BIN / "rud_evaluate"), "-t", "104", "-p", "peer")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "peer" / "metrics.json").is_file() or "mAP" in proc.stdout
    proc = run(sys.executable, str(ROOT / "scripts" / "peer_monai.py"), "-t", "104", "--minutes", "0.01", "-o", "peer")
    assert proc.returncode == 1 and "--overwrite" in proc.stderr  # existing outputs are never replaced silently
    proc = run(sys.executable, str(ROOT / "scripts" / "peer_monai.py"), "-t", "104", "--minutes", "0.01",
               "--validations", "1", "--backbone", "plan", "-o", "peer_plan")
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads((tmp_path / "data" / "Task104_ToySpheres" / "models" / "monai_retinanet_plansized_3d" / "fold0" /
                      "training_log.json").read_text())
    assert log["steps"] >= 1 and 0.0 <= log["checks"][-1]["val_map"] <= 1.0  # validated once, its own folder
    doc = json.loads(next((tmp_path / "peer_plan").glob("case_*.json")).read_text())
    assert doc["settings"]["backbone"] == "plan" and doc["settings"]["model"] == "monai_retinanet_plansized"


@pytest.mark.parametrize("dim", [2, 3])
def test_plan_sized_backbone_has_the_plans_widths_and_trains(dim):
    import torch

    from retinaunet.plans import make_test_plans

    plans = make_test_plans(dim=dim, patch_size=[16, 32, 32] if dim == 3 else [64, 64])
    net = plans.network
    spec_plan = peer.backbone_spec(plans, "plan")
    assert spec_plan["planes"] == [min(net.start_channels * 2 ** k, net.max_channels) for k in range(4)]
    assert spec_plan["fpn_channels"] == net.fpn_channels and len(spec_plan["layers"]) == 4
    torch.manual_seed(0)
    small = peer.build_detector(plans, torch.device("cpu"), "plan")
    tutorial = peer.build_detector(plans, torch.device("cpu"), "tutorial")
    count = lambda det: sum(p.numel() for p in det.network.parameters())  # noqa: E731
    assert count(small) * 50 < count(tutorial)  # a CPU-sized network, not the ResNet50-FPN
    fpn = small.network.feature_extractor.fpn
    assert [b.in_channels for b in fpn.inner_blocks] == [spec_plan["layer_channels"][i - 1]
                                                           for i in peer.RETURNED_LAYERS]
    shape = plans.patch_size
    image = torch.randn(1, *peer.to_monai_image(np.zeros((1, *shape))).shape[1:])
    box = peer.to_monai_boxes(np.array([[2.0, 8, 8, 10, 20, 20] if dim == 3 else [8.0, 8, 30, 30]]))
    small.train()
    losses = small([image], [{"boxes": torch.as_tensor(box, dtype=torch.float32),
                              "labels": torch.zeros(1, dtype=torch.long)}])
    loss = losses[small.cls_key] + losses[small.box_reg_key]
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0
                                        for p in small.network.parameters())
    with pytest.raises(peer.PeerError, match="tutorial or plan"):
        peer.backbone_spec(plans, "resnet18")
