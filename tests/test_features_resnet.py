"""extract with the ResNet bottom-up head (random weights, tiny images) and with detector boxes."""

import numpy as np
import pytest
import torch
import torchvision

from _features_helpers import make_shape_images, write_boxes_json
from vilbert.features import FeatureReader
from vilbert.features.backbones import ResNetBackbone
from vilbert.features.extract import run_extraction

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet")
    scenes = make_shape_images(folder / "images", 3, np.random.default_rng(0))
    write_boxes_json(folder / "boxes.json", scenes)
    return folder, scenes


def test_random_weights_gt_and_grid_write_readable_stores(images, tmp_path):
    folder, scenes = images
    options = dict(backbone="resnet50", random_weights=True, image_size=64, max_size=64, batch_size=2,
                   progress=False)
    gt = run_extraction(folder / "images", tmp_path / "gt", boxes="gt", boxes_file=folder / "boxes.json", **options)
    grid = run_extraction(folder / "images", tmp_path / "grid", boxes="grid", grid=2, **options)
    assert gt.written == 3 and grid.written == 3
    for image_id, objs in scenes.items():
        item = FeatureReader(tmp_path / "gt")[image_id]
        assert item.features.shape == (len(objs) + 1, 2048) and np.isfinite(item.features).all()
        assert FeatureReader(tmp_path / "grid")[image_id].features.shape == (5, 2048)


def test_batching_does_not_change_features(images):
    folder, scenes = images
    torch.manual_seed(0)
    backbone = ResNetBackbone(50, random_weights=True, device="cpu", image_size=64, max_size=64)
    from PIL import Image

    ids = sorted(scenes)[:2]
    arrays = [np.asarray(Image.open(folder / "images" / f"{i}.png").convert("RGB")) for i in ids]
    boxes = [np.array([b for _, _, b in scenes[i]], np.float32) for i in ids]
    together = backbone(arrays, boxes)
    alone = [backbone([a], [b])[0] for a, b in zip(arrays, boxes)]
    for x, y in zip(together, alone):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)
    # different boxes give different features (the RoIs reach the right image and place)
    assert not np.allclose(together[0][0], together[1][0])


def test_weights_file_is_loaded_and_bad_files_refused(tmp_path):
    model = torchvision.models.resnet50(weights=None)
    state = {"backbone.body." + k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "detector_backbone.pth")  # a detector's backbone keys, no classifier
    backbone = ResNetBackbone(50, weights=tmp_path / "detector_backbone.pth", device="cpu")
    torch.testing.assert_close(backbone.stem[0].weight, model.conv1.weight)
    torch.testing.assert_close(backbone.head[0].conv1.weight, model.layer4[0].conv1.weight)
    torch.save({"conv1.weight": model.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="partial.pth: .* ResNet weights missing"):
        ResNetBackbone(50, weights=tmp_path / "partial.pth", device="cpu")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pth: not a PyTorch state dict"):
        ResNetBackbone(50, weights=tmp_path / "junk.pth", device="cpu")


def test_detector_boxes_with_class_distribution(images, tmp_path):
    folder, scenes = images
    torch.manual_seed(0)
    detector = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=5)
    torch.save(detector.state_dict(), tmp_path / "detector.pth")
    result = run_extraction(folder / "images", tmp_path / "s", boxes="detector", detector=tmp_path / "detector.pth",
                            detector_arch="fasterrcnn_mobilenet_v3_large_320_fpn", min_boxes=3, max_boxes=6,
                            backbone="pixels", progress=False)
    assert result.written == 3
    reader = FeatureReader(tmp_path / "s")
    for image_id in scenes:
        item = reader[image_id]
        assert 3 <= len(item.boxes) <= 6
        assert (item.boxes[:, 2] <= 64.01).all() and (item.boxes[:, 3] <= 64.01).all() and (item.boxes >= -0.01).all()
        assert item.cls_prob.shape == (len(item.boxes), 5)
        np.testing.assert_allclose(item.cls_prob.sum(1), 1.0, atol=5e-3)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: not a torchvision Faster R-CNN state dict"):
        run_extraction(folder / "images", tmp_path / "t", boxes="detector", detector=tmp_path / "other.pth",
                       progress=False)
    with pytest.raises(ValueError, match=r"data.mdb: not a PyTorch state dict \(UnpicklingError: [^\n]*\)$"):
        run_extraction(folder / "images", tmp_path / "t", boxes="detector", detector=tmp_path / "s" / "data.mdb",
                       progress=False)
