"""Small generated data for the feature tests: random records, images of coloured shapes, and a
tiny random detector in 12-in-1's maskrcnn-benchmark layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (40, 60, 220),
    "yellow": (240, 220, 40),
}
SHAPES = ("square", "circle", "triangle")


def random_record(rng, n=None, dim=16, classes=None, image_h=None, image_w=None):
    """dict(image_h, image_w, boxes (n,4) valid pixel boxes, features (n,dim) f32, cls_prob or None)."""
    n = int(rng.integers(1, 8)) if n is None else n
    image_h = int(rng.integers(20, 400)) if image_h is None else image_h
    image_w = int(rng.integers(20, 400)) if image_w is None else image_w
    x1 = rng.uniform(0, image_w / 2, n)
    y1 = rng.uniform(0, image_h / 2, n)
    x2 = x1 + rng.uniform(1, image_w / 2, n)
    y2 = y1 + rng.uniform(1, image_h / 2, n)
    boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
    features = rng.standard_normal((n, dim)).astype(np.float32)
    cls_prob = None
    if classes:
        logits = rng.standard_normal((n, classes))
        cls_prob = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    return dict(image_h=image_h, image_w=image_w, boxes=boxes, features=features, cls_prob=cls_prob)


def write_store(path, records: dict, **writer_kwargs):
    from vilbert.features import FeatureWriter

    with FeatureWriter(path, **writer_kwargs) as writer:
        for image_id, record in records.items():
            writer.put(image_id, **record)
    return Path(path)


def draw_shape(pixels, shape, colour, x1, y1, x2, y2):
    """Paint a filled shape into the HxWx3 uint8 array inside box (x1, y1, x2, y2) (ints, exclusive)."""
    yy, xx = np.mgrid[y1:y2, x1:x2]
    cx, cy = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2
    rx, ry = (x2 - x1) / 2, (y2 - y1) / 2
    if shape == "square":
        inside = np.ones_like(xx, dtype=bool)
    elif shape == "circle":
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    else:  # triangle, apex at the top
        inside = np.abs(xx - cx) <= rx * (yy - y1 + 1) / (y2 - y1)
    region = pixels[y1:y2, x1:x2]
    region[inside] = colour


def make_shape_images(folder, count, rng, size=64, objects=(1, 3), background=(235, 235, 235)):
    """Write `count` PNG images of coloured shapes; return {image id: [(shape, colour, box), ...]}."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = {}
    for index in range(count):
        pixels = np.empty((size, size, 3), dtype=np.uint8)
        pixels[:] = background
        objs = []
        slots = rng.permutation(4)[: int(rng.integers(objects[0], objects[1] + 1))]
        for slot in slots.tolist():  # four quadrants, so objects never overlap
            side = int(rng.integers(size // 6, size // 2 - 4))
            ox = (slot % 2) * size // 2 + int(rng.integers(1, size // 2 - side))
            oy = (slot // 2) * size // 2 + int(rng.integers(1, size // 2 - side))
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            draw_shape(pixels, shape, COLOURS[colour], ox, oy, ox + side, oy + side)
            objs.append((shape, colour, [int(ox), int(oy), int(ox + side), int(oy + side)]))
        Image.fromarray(pixels).save(folder / f"{1000 + index}.png")
        scenes[str(1000 + index)] = objs
    return scenes


def write_boxes_json(path, scenes, with_cls_prob=False):
    """boxes.json for --boxes gt; cls_prob (optional) = one-hot over shape x colour classes."""
    classes = [(s, c) for s in SHAPES for c in COLOURS]
    data = {}
    for image_id, objs in scenes.items():
        entry = {"boxes": [box for _, _, box in objs]}
        if with_cls_prob:
            entry["cls_prob"] = [[1.0 if (s, c) == k else 0.0 for k in classes] for s, c, _ in objs]
        data[image_id] = entry
    Path(path).write_text(json.dumps(data))
    return Path(path)


# A tiny detector of 12-in-1's structure: R-50-FPN body with grouped convs (ResNeXt), stride in
# the 3x3 conv, FPN, 2-layer MLP box head (TINY_FEATURE_SIZE wide: its fc6 features); 11 classes
# (background + 10).
TINY_FEATURE_SIZE = 16
TINY_YAML = """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  BACKBONE:
    CONV_BODY: "R-50-FPN"
    OUT_CHANNELS: 8
  RESNETS:
    STRIDE_IN_1X1: False
    NUM_GROUPS: 2
    WIDTH_PER_GROUP: 2
    STEM_OUT_CHANNELS: 8
    RES2_OUT_CHANNELS: 16
  RPN:
    USE_FPN: True
    ANCHOR_STRIDE: (4, 8, 16, 32, 64)
    PRE_NMS_TOP_N_TEST: 200
    POST_NMS_TOP_N_TEST: 100
    FPN_POST_NMS_TOP_N_TEST: 150
  ROI_HEADS:
    USE_FPN: True
  ROI_BOX_HEAD:
    POOLER_RESOLUTION: 3
    POOLER_SCALES: (0.25, 0.125, 0.0625, 0.03125)
    POOLER_SAMPLING_RATIO: 2
    FEATURE_EXTRACTOR: "FPN2MLPFeatureExtractor"
    PREDICTOR: "FPNPredictor"
    RETURN_FC_FEATS: True
    MLP_HEAD_DIM: 16
    NUM_CLASSES: 11
INPUT:
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 96
DATASETS:
  TEST: ("vqa_test",)
SOLVER:
  BASE_LR: 0.01
"""


def maskrcnn_state_dict(seed=0, groups=2, width=2, stem=8, res2=16, fpn=8, mlp=16, classes=11, resolution=3,
                        blocks=(3, 4, 6, 3), anchors_per_level=3):
    """A random maskrcnn-benchmark FPN Faster R-CNN state dict, written from the layout of its
    modules (backbone.body ResNet with FrozenBatchNorm2d, backbone.fpn, rpn.head and the anchor
    buffers, roi_heads.box FPN2MLP extractor and FPNPredictor with its box regression)."""
    import torch

    from vilbert.features.vmb import cell_anchors

    shapes = {}

    def frozen_bn(prefix, channels):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)

    shapes["backbone.body.stem.conv1.weight"] = (stem, 3, 7, 7)
    frozen_bn("backbone.body.stem.bn1", stem)
    in_channels = stem
    for stage, count in enumerate(blocks, start=1):
        out_channels, inner = res2 * 2 ** (stage - 1), groups * width * 2 ** (stage - 1)
        for block in range(count):
            prefix = f"backbone.body.layer{stage}.{block}"
            block_in = in_channels if block == 0 else out_channels
            if block_in != out_channels:
                shapes[f"{prefix}.downsample.0.weight"] = (out_channels, block_in, 1, 1)
                frozen_bn(f"{prefix}.downsample.1", out_channels)
            shapes[f"{prefix}.conv1.weight"] = (inner, block_in, 1, 1)
            frozen_bn(f"{prefix}.bn1", inner)
            shapes[f"{prefix}.conv2.weight"] = (inner, inner // groups, 3, 3)
            frozen_bn(f"{prefix}.bn2", inner)
            shapes[f"{prefix}.conv3.weight"] = (out_channels, inner, 1, 1)
            frozen_bn(f"{prefix}.bn3", out_channels)
        in_channels = out_channels
    for level in range(1, 5):
        shapes[f"backbone.fpn.fpn_inner{level}.weight"] = (fpn, res2 * 2 ** (level - 1), 1, 1)
        shapes[f"backbone.fpn.fpn_inner{level}.bias"] = (fpn,)
        shapes[f"backbone.fpn.fpn_layer{level}.weight"] = (fpn, fpn, 3, 3)
        shapes[f"backbone.fpn.fpn_layer{level}.bias"] = (fpn,)
    shapes["rpn.head.conv.weight"], shapes["rpn.head.conv.bias"] = (fpn, fpn, 3, 3), (fpn,)
    shapes["rpn.head.cls_logits.weight"] = (anchors_per_level, fpn, 1, 1)
    shapes["rpn.head.cls_logits.bias"] = (anchors_per_level,)
    shapes["rpn.head.bbox_pred.weight"] = (4 * anchors_per_level, fpn, 1, 1)
    shapes["rpn.head.bbox_pred.bias"] = (4 * anchors_per_level,)
    shapes["roi_heads.box.feature_extractor.fc6.weight"] = (mlp, fpn * resolution * resolution)
    shapes["roi_heads.box.feature_extractor.fc6.bias"] = (mlp,)
    shapes["roi_heads.box.feature_extractor.fc7.weight"] = (mlp, mlp)
    shapes["roi_heads.box.feature_extractor.fc7.bias"] = (mlp,)
    shapes["roi_heads.box.predictor.cls_score.weight"] = (classes, mlp)
    shapes["roi_heads.box.predictor.cls_score.bias"] = (classes,)
    shapes["roi_heads.box.predictor.bbox_pred.weight"] = (4 * classes, mlp)
    shapes["roi_heads.box.predictor.bbox_pred.bias"] = (4 * classes,)

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("running_var"):
            value = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=generator) * 0.1
        elif len(shape) == 1:
            value = torch.rand(shape, generator=generator) * 0.5 + 0.3 if key.endswith(".weight") and "bn" in key \
                else torch.randn(shape, generator=generator) * 0.05
        else:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        state[key] = value
    state["rpn.head.cls_logits.weight"] *= 0.02  # objectness spread, not saturated
    state["roi_heads.box.predictor.cls_score.weight"] *= 0.3
    for level, (stride, size) in enumerate(zip((4, 8, 16, 32, 64), (32, 64, 128, 256, 512))):
        state[f"rpn.anchor_generator.cell_anchors.{level}"] = cell_anchors(stride, size, (0.5, 1.0, 2.0))
    return state


def write_tiny_detector(folder):
    """TINY_YAML and a random maskrcnn_state_dict() as 12-in-1 ships its detector ({"model": state
    dict}, here with DataParallel's "module." prefix too) -> (detectron_model.pth, detectron_config.yaml)."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "detectron_config.yaml").write_text(TINY_YAML)
    state = {f"module.{k}": v for k, v in maskrcnn_state_dict().items()}
    torch.save({"model": state, "iteration": 90000}, folder / "detectron_model.pth")
    return folder / "detectron_model.pth", folder / "detectron_config.yaml"
