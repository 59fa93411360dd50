"""The preprocessed store: one spelling of a case's files, and one 2Dc channel layout for training and
inference."""

from __future__ import annotations

import numpy as np

from retinaunet import store
from retinaunet.training.loader import PatchChoice, PatchSampler, read_case_info


def _write(folder, name="vol", shape=(6, 12, 10), channels=2):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(channels, *shape)).astype(np.float32)
    seg = np.zeros(shape, np.int32)
    seg[2:4, 3:6, 4:7] = 1
    props = {"case": name, "shape": list(shape), "instances": {"1": 0}, "boxes": {"1": [2, 3, 4, 4, 6, 7]}}
    store.save_case(folder, name, data, seg, props)
    return data, props


def test_save_load_and_list(tmp_path):
    data, props = _write(tmp_path)
    assert store.list_cases(tmp_path) == ["vol"] and store.case_files(tmp_path, "vol").complete()
    loaded, loaded_props = store.load_case(tmp_path, "vol")
    np.testing.assert_array_equal(loaded, data)
    assert loaded_props == props and store.case_classes(tmp_path) == {"vol": {0}}
    boxes, labels = store.ground_truth(loaded_props, 3)
    np.testing.assert_array_equal(boxes, [[2, 3, 4, 4, 6, 7]]) and np.testing.assert_array_equal(labels, [0])
    store.invalidate(tmp_path, "vol")  # without its json a case is not trusted
    assert store.list_cases(tmp_path) == [] and not store.is_current(tmp_path, "vol", "any")


def test_2dc_layout_of_the_loader_and_the_predictor_agree(tmp_path):
    data, _ = _write(tmp_path)
    k = 2
    sampler = PatchSampler([read_case_info(tmp_path, "vol")], [12, 10], [12, 10], context=k)
    for z in range(data.shape[1]):  # edge slices included: neighbours outside the volume are zero
        choice = PatchChoice(0, np.array([z, 6.0, 5.0]), None)
        image, _ = sampler.read(choice)
        np.testing.assert_array_equal(image, store.context_slice(data, z, k))
    assert store.context_channels(2, k) == store.context_slice(data, 0, k).shape[0] == 10
    # modality-major: channel m * (2k+1) + (dz + k) is modality m at slice z + dz
    np.testing.assert_array_equal(store.context_slice(data, 3, k)[1 * 5 + (1 + k)], data[1, 4])
