"""12-in-1's region-feature detector in plain PyTorch + torchvision ("vmb": vqa-maskrcnn-benchmark).

vilbert-multi-task (12-in-1) was trained on the features of a ResNeXt-152 32x8d FPN Faster R-CNN
trained on Visual Genome (1600 classes + background), shipped as `detectron_model.pth` +
`detectron_config.yaml` in maskrcnn-benchmark's format and run by its `script/extract_features.py`
through a fork of maskrcnn-benchmark whose compiled extensions no longer build. This module reads
those two files and computes the same numbers (REFERENCE section 5; docs/DETECTOR.md for the
measured parity):

    extractor = VmbExtractor("detectron_model.pth", "detectron_config.yaml", device="cuda")
    regions = extractor(images)          # images: list of HxWx3 uint8 RGB arrays
    regions[0].boxes, regions[0].features, regions[0].cls_prob   # (n, 4) px, (n, 2048) fc6, (n, 1601)
    extractor(images, boxes=[...])       # features of given x1, y1, x2, y2 boxes instead

The pipeline, each step as maskrcnn-benchmark (and 12-in-1's script) computes it:
1. Input: RGB -> BGR in 0-255 (`INPUT.TO_BGR255`), minus `INPUT.PIXEL_MEAN` (over `PIXEL_STD`, 1 in
   every released config), bilinear resize (OpenCV's: half-pixel centres, scale 1/s, no antialias)
   so that the shorter side is `MIN_SIZE_TEST` (800) unless the longer would round to more than
   `MAX_SIZE_TEST` (1333); the batch is zero-padded to a multiple of 32.
2. Backbone: ResNet/ResNeXt body (frozen batch norm as a per-channel scale and shift without an
   epsilon; stride on the 1x1 or the 3x3 conv per `STRIDE_IN_1X1`), FPN (P2-P5 with nearest 2x
   top-down upsampling, P6 = stride-2 subsampling of P5).
3. RPN: one 3x3 conv + ReLU, objectness and box deltas per anchor; anchors of the "+1" convention
   (a box x1..x2 is x2 - x1 + 1 wide); per level: top `PRE_NMS_TOP_N_TEST` by objectness, decode
   (dw, dh clipped at log(1000/16)), clip to the image, drop boxes smaller than `RPN.MIN_SIZE`, NMS
   at `NMS_THRESH` (IoU of the +1 convention), keep `POST_NMS_TOP_N_TEST`; then the best
   `FPN_POST_NMS_TOP_N_TEST` of all levels, per image.
4. Box head: each proposal pooled from one FPN level (FPN eq. 1: floor(4 + log2(sqrt(area) / 224 +
   1e-6)), clamped to the pooler's levels) by RoIAlign with aligned=False, fc6 -> ReLU -> fc7 ->
   ReLU -> class logits -> softmax. The stored feature is fc6 after its ReLU (2048-d).
5. Selection (12-in-1's `extract_features.py`): for every foreground class, NMS at 0.5 over all
   proposals (in original-image pixels) with that class's scores; each box's score is the best
   class score among the classes whose NMS kept it and that exceed the confidence threshold; the
   boxes are ranked by that score and the best `num_features` (100) are kept.

Deliberate differences from the fork and the script (bugs there, or a cleaner store):
- The fork clips proposals to the padded size of the whole batch, so with a batch of two differently
  sized images the smaller one gets proposals over the padding. We clip to each image's own size
  rounded up to 32 (the fork's result for a batch of one image, which is what its Detectron
  ancestor ran).
- The script stores 100 boxes whatever the threshold (its `num_boxes` counts those above it, and
  12-in-1's reader ignores `num_boxes`). We store the boxes above the threshold, at least
  `min_boxes` (topped up in ranking order) and at most `num_features`. With the script's default
  threshold, 0, that is the same 100 boxes.
- Boxes are stored clipped to the image (the script's may reach up to 31 resized pixels into the
  padding), and a proposal under one pixel wide or high, which the +1 convention lets end up to a
  pixel before it starts (x2 < x1), is stored with x2 = x1 (y2 = y1): no negative areas.
- Ground-truth boxes are taken as x1, y1, x2, y2 and scaled by the image's resize factor
  (`extract_features_from_gt.py` passes x, y, w, h and scales by the padded size).
- Grey, palette and RGBA images are converted to RGB by the extractor's loader (the script breaks
  on the last two).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

# Residual blocks per stage (res2..res5) of the bodies maskrcnn-benchmark names.
BODIES = {"R-50-FPN": (3, 4, 6, 3), "R-101-FPN": (3, 4, 23, 3), "R-152-FPN": (3, 8, 36, 3)}
# The box decoder's cap on dw, dh (maskrcnn-benchmark's bbox_xform_clip).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)
# FPN eq. (1): a 224 x 224 box maps to level 4 (maskrcnn-benchmark's LevelMapper).
CANONICAL_SCALE, CANONICAL_LEVEL, LEVEL_EPS = 224, 4, 1e-6
SELECTION_NMS = 0.5  # 12-in-1's per-class NMS threshold


@dataclass(frozen=True)
class VmbConfig:
    """The settings of a maskrcnn-benchmark config that the features depend on (defaults: theirs)."""

    body: str = "R-50-C4"  # MODEL.BACKBONE.CONV_BODY (their default is not an FPN body: must be set)
    num_groups: int = 1  # MODEL.RESNETS.NUM_GROUPS (32 for ResNeXt-152 32x8d)
    width_per_group: int = 64  # MODEL.RESNETS.WIDTH_PER_GROUP (8)
    stride_in_1x1: bool = True  # MODEL.RESNETS.STRIDE_IN_1X1 (False for Caffe2-trained models)
    stem_out_channels: int = 64  # MODEL.RESNETS.STEM_OUT_CHANNELS
    res2_out_channels: int = 256  # MODEL.RESNETS.RES2_OUT_CHANNELS
    fpn_channels: int = 1024  # MODEL.BACKBONE.OUT_CHANNELS (the fork) or MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    anchor_sizes: tuple = (32.0, 64.0, 128.0, 256.0, 512.0)  # MODEL.RPN.ANCHOR_SIZES, one per level
    aspect_ratios: tuple = (0.5, 1.0, 2.0)  # MODEL.RPN.ASPECT_RATIOS
    anchor_strides: tuple = (16,)  # MODEL.RPN.ANCHOR_STRIDE (FPN: 4, 8, 16, 32, 64)
    pre_nms_top_n: int = 6000  # MODEL.RPN.PRE_NMS_TOP_N_TEST, per level
    post_nms_top_n: int = 1000  # MODEL.RPN.POST_NMS_TOP_N_TEST, per level
    fpn_post_nms_top_n: int = 2000  # MODEL.RPN.FPN_POST_NMS_TOP_N_TEST, per image
    rpn_nms_threshold: float = 0.7  # MODEL.RPN.NMS_THRESH
    rpn_min_size: float = 0.0  # MODEL.RPN.MIN_SIZE
    pooler_resolution: int = 14  # MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
    pooler_scales: tuple = (1.0 / 16,)  # MODEL.ROI_BOX_HEAD.POOLER_SCALES
    pooler_sampling_ratio: int = 0  # MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO (0: adaptive)
    mlp_head_dim: int = 1024  # MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM (fc6/fc7 width: 2048 in 12-in-1)
    num_classes: int = 81  # MODEL.ROI_BOX_HEAD.NUM_CLASSES (1601: Visual Genome + background)
    min_size: int = 800  # INPUT.MIN_SIZE_TEST
    max_size: int = 1333  # INPUT.MAX_SIZE_TEST
    pixel_mean: tuple = (102.9801, 115.9465, 122.7717)  # INPUT.PIXEL_MEAN (BGR)
    pixel_std: tuple = (1.0, 1.0, 1.0)  # INPUT.PIXEL_STD
    to_bgr255: bool = True  # INPUT.TO_BGR255
    size_divisibility: int = 32  # DATALOADER.SIZE_DIVISIBILITY (0 there means 32 here, as the script pads)

    @property
    def blocks(self) -> tuple:
        return BODIES[self.body]

    def check(self, where: str = "config") -> "VmbConfig":
        """Raise a one-line ValueError for settings this implementation does not cover."""
        if self.body not in BODIES:
            raise ValueError(f"{where}: MODEL.BACKBONE.CONV_BODY {self.body!r} is not supported "
                             f"(supported: {', '.join(BODIES)})")
        levels = len(self.anchor_strides)
        if levels != 5 or len(self.anchor_sizes) != 5:
            raise ValueError(f"{where}: an FPN RPN needs 5 MODEL.RPN.ANCHOR_STRIDE and ANCHOR_SIZES (P2-P6), "
                             f"got {list(self.anchor_strides)} and {list(self.anchor_sizes)}")
        if not 1 <= len(self.pooler_scales) <= 5:
            raise ValueError(f"{where}: MODEL.ROI_BOX_HEAD.POOLER_SCALES must list 1 to 5 scales, "
                             f"got {list(self.pooler_scales)}")
        for scale in self.pooler_scales:
            level = -math.log2(scale)
            if abs(level - round(level)) > 1e-6 or not 2 <= round(level) <= 6:
                raise ValueError(f"{where}: MODEL.ROI_BOX_HEAD.POOLER_SCALES must be 1/4 ... 1/64, got {scale}")
        if self.size_divisibility % 32:
            raise ValueError(f"{where}: DATALOADER.SIZE_DIVISIBILITY must be a multiple of 32 for the FPN, "
                             f"got {self.size_divisibility}")
        for name in ("num_groups", "width_per_group", "stem_out_channels", "res2_out_channels", "fpn_channels",
                     "pre_nms_top_n", "post_nms_top_n", "fpn_post_nms_top_n", "pooler_resolution",
                     "mlp_head_dim", "min_size", "max_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}: {_FIELD_KEYS.get(name, name)} must be positive, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ValueError(f"{where}: MODEL.ROI_BOX_HEAD.NUM_CLASSES must count background and at least one class")
        return self


# YAML key -> VmbConfig field. The value's type is checked against the field's default.
_KEYS = {
    "MODEL.BACKBONE.CONV_BODY": "body",
    "MODEL.RESNETS.NUM_GROUPS": "num_groups",
    "MODEL.RESNETS.WIDTH_PER_GROUP": "width_per_group",
    "MODEL.RESNETS.STRIDE_IN_1X1": "stride_in_1x1",
    "MODEL.RESNETS.STEM_OUT_CHANNELS": "stem_out_channels",
    "MODEL.RESNETS.RES2_OUT_CHANNELS": "res2_out_channels",
    "MODEL.BACKBONE.OUT_CHANNELS": "fpn_channels",
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS": "fpn_channels",  # where upstream maskrcnn-benchmark moved it
    "MODEL.RPN.ANCHOR_SIZES": "anchor_sizes",
    "MODEL.RPN.ASPECT_RATIOS": "aspect_ratios",
    "MODEL.RPN.ANCHOR_STRIDE": "anchor_strides",
    "MODEL.RPN.PRE_NMS_TOP_N_TEST": "pre_nms_top_n",
    "MODEL.RPN.POST_NMS_TOP_N_TEST": "post_nms_top_n",
    "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST": "fpn_post_nms_top_n",
    "MODEL.RPN.NMS_THRESH": "rpn_nms_threshold",
    "MODEL.RPN.MIN_SIZE": "rpn_min_size",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": "pooler_resolution",
    "MODEL.ROI_BOX_HEAD.POOLER_SCALES": "pooler_scales",
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": "pooler_sampling_ratio",
    "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM": "mlp_head_dim",
    "MODEL.ROI_BOX_HEAD.NUM_CLASSES": "num_classes",
    "INPUT.MIN_SIZE_TEST": "min_size",
    "INPUT.MAX_SIZE_TEST": "max_size",
    "INPUT.PIXEL_MEAN": "pixel_mean",
    "INPUT.PIXEL_STD": "pixel_std",
    "INPUT.TO_BGR255": "to_bgr255",
    "DATALOADER.SIZE_DIVISIBILITY": "size_divisibility",
}
_FIELD_KEYS = {fieldname: key for key, fieldname in _KEYS.items()}
# Structural keys: present or not, they must say what this implementation builds (their default
# first; a config that leaves out the USE_FPN keys describes a model without an FPN RPN).
_REQUIRED = {
    "MODEL.META_ARCHITECTURE": ("GeneralizedRCNN",),
    "MODEL.RPN_ONLY": (False,),
    "MODEL.RPN.USE_FPN": (True,),
    "MODEL.ROI_HEADS.USE_FPN": (True,),
    "MODEL.RPN.RPN_HEAD": ("SingleConvRPNHead",),
    "MODEL.RESNETS.TRANS_FUNC": ("BottleneckWithFixedBatchNorm",),
    "MODEL.RESNETS.STEM_FUNC": ("StemWithFixedBatchNorm",),
    "MODEL.RESNETS.RES5_DILATION": (1,),
    "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR": ("FPN2MLPFeatureExtractor",),
    "MODEL.ROI_BOX_HEAD.PREDICTOR": ("FPNPredictor",),
    # upstream maskrcnn-benchmark's options for other layers (absent from the fork)
    "MODEL.FPN.USE_GN": (False,),
    "MODEL.FPN.USE_RELU": (False,),
    "MODEL.ROI_BOX_HEAD.USE_GN": (False,),
    "MODEL.RETINANET_ON": (False,),
    "MODEL.RESNETS.STAGE_WITH_DCN": ((False, False, False, False),),
}
_DEFAULT_MISSING = {"MODEL.RPN.USE_FPN": False, "MODEL.ROI_HEADS.USE_FPN": False}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _decode(value):
    """yacs's reading of a YAML value: strings that are Python literals ("(4, 8)") become them."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _coerce(key: str, value, default, where: str):
    def bad(kind):
        return ValueError(f"{where}: {key} must be {kind}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)  # yacs accepts "ANCHOR_STRIDE: 16" for a one-level tuple too
        if not isinstance(value, (list, tuple)) or not value or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise bad("a non-empty list of numbers")
        cast = int if all(isinstance(v, int) for v in default) else float
        if cast is int and any(float(v) != int(v) for v in value):
            raise bad("a list of integers")
        return tuple(cast(v) for v in value)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def config_from_dict(tree: dict, where: str = "config") -> tuple[VmbConfig, list[str]]:
    """A maskrcnn-benchmark config (nested dict as in its YAML) -> (VmbConfig, keys not used)."""
    flat = {key: _decode(value) for key, value in _flatten(tree).items()}
    values = {}
    for key, fieldname in _KEYS.items():
        if key in flat:
            value = _coerce(key, flat[key], getattr(VmbConfig, fieldname), where)
            if fieldname in values and values[fieldname] != value:
                raise ValueError(f"{where}: MODEL.BACKBONE.OUT_CHANNELS and MODEL.RESNETS.BACKBONE_OUT_CHANNELS "
                                 f"disagree ({values[fieldname]} and {value})")
            values[fieldname] = value
    if values.get("size_divisibility") == 0:
        values["size_divisibility"] = 32  # 12-in-1's script pads to 32 whatever the config says
    for key, allowed in _REQUIRED.items():
        value = flat.get(key, _DEFAULT_MISSING.get(key, allowed[0]))
        if isinstance(value, list):
            value = tuple(value)
        if value not in allowed:
            raise ValueError(f"{where}: {key} is {value!r}; this detector implements only {allowed[0]!r}")
    unused = sorted(key for key in flat if key not in _KEYS and key not in _REQUIRED)
    return VmbConfig(**values).check(where), unused


def read_config(path) -> tuple[VmbConfig, list[str]]:
    """Read a maskrcnn-benchmark YAML config (yaml.safe_load) -> (VmbConfig, keys not used)."""
    import yaml

    path = Path(path)
    where = f"--detector-config {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    try:
        tree = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{where}: not a YAML file ({first})") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{where}: expected a mapping of config keys (MODEL: ..., INPUT: ...)")
    return config_from_dict(tree, where)


class FrozenBatchNorm(nn.Module):
    """maskrcnn-benchmark's FrozenBatchNorm2d: y = x * scale + shift with scale = weight /
    sqrt(running_var), shift = bias - running_mean * scale. No epsilon: the released models were
    converted from Caffe2, whose statistics are already folded (running_var 1, running_mean 0)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        scale = self.weight * self.running_var.rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class Bottleneck(nn.Module):
    """1x1 -> grouped 3x3 -> 1x1 with a projection shortcut when the width changes."""

    def __init__(self, in_channels, bottleneck_channels, out_channels, groups, stride_in_1x1, stride):
        super().__init__()
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            FrozenBatchNorm(out_channels))
        # MSRA's ResNets stride in the first 1x1 conv; Caffe2's and Torch's (12-in-1's) in the 3x3.
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False)
        self.bn1 = FrozenBatchNorm(bottleneck_channels)
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=1,
                               groups=groups, bias=False)
        self.bn2 = FrozenBatchNorm(bottleneck_channels)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.bn3 = FrozenBatchNorm(out_channels)

    def forward(self, x):
        out = F.relu_(self.bn1(self.conv1(x)))
        out = F.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return F.relu_(out)


class Stem(nn.Module):
    def __init__(self, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm(out_channels)

    def forward(self, x):
        x = F.relu_(self.bn1(self.conv1(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNetBody(nn.Module):
    """stem + layer1..layer4 (res2..res5, strides 4..32); returns the four stage outputs."""

    def __init__(self, config: VmbConfig):
        super().__init__()
        self.stem = Stem(config.stem_out_channels)
        in_channels = config.stem_out_channels
        for index, count in enumerate(config.blocks):
            factor = 2**index  # each stage doubles the widths of res2
            out_channels = config.res2_out_channels * factor
            bottleneck = config.num_groups * config.width_per_group * factor
            blocks = [Bottleneck(in_channels if i == 0 else out_channels, bottleneck, out_channels,
                                 config.num_groups, config.stride_in_1x1, 1 if index == 0 or i > 0 else 2)
                      for i in range(count)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = out_channels

    def forward(self, x):
        x = self.stem(x)
        outputs = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            outputs.append(x)
        return outputs  # C2..C5


class FPN(nn.Module):
    """Lateral 1x1 + output 3x3 convs per stage; top-down nearest 2x upsampling; P6 = P5[::2, ::2]."""

    def __init__(self, config: VmbConfig):
        super().__init__()
        for index in range(1, 5):
            in_channels = config.res2_out_channels * 2 ** (index - 1)
            self.add_module(f"fpn_inner{index}", nn.Conv2d(in_channels, config.fpn_channels, 1))
            self.add_module(f"fpn_layer{index}", nn.Conv2d(config.fpn_channels, config.fpn_channels, 3, padding=1))

    def forward(self, stages):
        inner = self.fpn_inner4(stages[3])
        outputs = [self.fpn_layer4(inner)]
        for index in (3, 2, 1):
            # The fork upsamples by a fixed factor of 2 (Caffe2's way); padding to 32 makes it fit.
            inner = getattr(self, f"fpn_inner{index}")(stages[index - 1]) + F.interpolate(
                inner, scale_factor=2, mode="nearest")
            outputs.insert(0, getattr(self, f"fpn_layer{index}")(inner))
        outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))  # P6
        return outputs  # P2..P6


class Backbone(nn.Module):
    def __init__(self, config: VmbConfig):
        super().__init__()
        self.body = ResNetBody(config)
        self.fpn = FPN(config)

    def forward(self, images):
        return self.fpn(self.body(images))


def cell_anchors(stride: int, size: float, aspect_ratios) -> torch.Tensor:
    """The anchors of one FPN level around the cell (0, 0, stride - 1, stride - 1), "+1" convention:
    for each aspect ratio r (= h / w), width round(sqrt(stride^2 / r)) and height round(width * r)
    (half to even), both scaled by size / stride, centred on (stride - 1) / 2. (A, 4) float32."""
    ratios = np.asarray(aspect_ratios, dtype=np.float64)
    widths = np.round(np.sqrt(stride * stride / ratios))
    heights = np.round(widths * ratios)
    scale = float(size) / stride
    widths, heights = widths * scale, heights * scale
    centre = (stride - 1) / 2.0
    anchors = np.stack([centre - 0.5 * (widths - 1), centre - 0.5 * (heights - 1),
                        centre + 0.5 * (widths - 1), centre + 0.5 * (heights - 1)], axis=1)
    return torch.from_numpy(anchors).float()


def grid_anchors(cells: torch.Tensor, stride: int, height: int, width: int) -> torch.Tensor:
    """Cell anchors (A, 4) shifted to every position of an height x width map: (height * width * A, 4),
    position-major (y, then x), anchor-minor, as the RPN head's outputs are flattened."""
    shift_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=cells.device)
    shift_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=cells.device)
    shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack([shift_x.reshape(-1), shift_y.reshape(-1)] * 2, dim=1)  # (H*W, 4)
    return (shifts[:, None, :] + cells[None, :, :]).reshape(-1, 4)


def decode_boxes(deltas: torch.Tensor, reference: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Apply (dx, dy, dw, dh) deltas (n, 4) to reference boxes (n, 4), "+1" convention: a box is
    x2 - x1 + 1 wide, centred at x1 + width / 2, and decodes to [cx - w / 2, cy - h / 2, cx + w / 2 - 1,
    cy + h / 2 - 1]. dw, dh are capped at log(1000 / 16) (maskrcnn-benchmark's BoxCoder)."""
    widths = reference[:, 2] - reference[:, 0] + 1
    heights = reference[:, 3] - reference[:, 1] + 1
    centre_x = reference[:, 0] + 0.5 * widths
    centre_y = reference[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = torch.clamp(deltas[:, 2] / ww, max=BBOX_XFORM_CLIP)
    dh = torch.clamp(deltas[:, 3] / wh, max=BBOX_XFORM_CLIP)
    pred_x, pred_y = dx * widths + centre_x, dy * heights + centre_y
    pred_w, pred_h = torch.exp(dw) * widths, torch.exp(dh) * heights
    return torch.stack([pred_x - 0.5 * pred_w, pred_y - 0.5 * pred_h,
                        pred_x + 0.5 * pred_w - 1, pred_y + 0.5 * pred_h - 1], dim=1)


def nms_plus_one(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """maskrcnn-benchmark's NMS: IoU with the "+1" convention (areas (x2 - x1 + 1)(y2 - y1 + 1)), a
    box suppressed when its IoU with a kept one exceeds the threshold (their CUDA kernel's test; the
    CPU one's is >=), kept indices by decreasing score. That IoU is torchvision's of the boxes grown
    by one pixel to the right and bottom."""
    grown = boxes.clone()
    grown[:, 2:] += 1
    return torchvision.ops.nms(grown, scores, threshold)


class AnchorGenerator(nn.Module):
    """Holds each level's cell anchors as buffers `cell_anchors.<level>` (saved in the checkpoints)."""

    def __init__(self, config: VmbConfig):
        super().__init__()
        self.strides = config.anchor_strides
        self.cell_anchors = nn.Module()
        for level, (stride, size) in enumerate(zip(config.anchor_strides, config.anchor_sizes)):
            self.cell_anchors.register_buffer(str(level), cell_anchors(stride, size, config.aspect_ratios))

    def levels(self):
        return [getattr(self.cell_anchors, str(level)) for level in range(len(self.strides))]


class RPNHead(nn.Module):
    def __init__(self, channels: int, anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(channels, anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, anchors * 4, 1)

    def forward(self, feature):
        hidden = F.relu(self.conv(feature))
        return self.cls_logits(hidden), self.bbox_pred(hidden)


class RPN(nn.Module):
    def __init__(self, config: VmbConfig):
        super().__init__()
        self.config = config
        self.anchor_generator = AnchorGenerator(config)
        self.head = RPNHead(config.fpn_channels, len(config.aspect_ratios))

    def forward(self, features, clip_sizes) -> list[torch.Tensor]:
        """Proposals (n_i, 4), in the resized image's pixels, best objectness first, one per image.
        `clip_sizes`: (height, width) each image's proposals are clipped to."""
        config = self.config
        per_image = [[] for _ in clip_sizes]  # (boxes, objectness) per level
        for feature, cells, stride in zip(features, self.anchor_generator.levels(), config.anchor_strides):
            logits, deltas = self.head(feature)
            batch, anchors, height, width = logits.shape
            objectness = logits.permute(0, 2, 3, 1).reshape(batch, -1).sigmoid()  # (B, H*W*A)
            deltas = deltas.view(batch, anchors, 4, height, width).permute(0, 3, 4, 1, 2).reshape(batch, -1, 4)
            grid = grid_anchors(cells, stride, height, width)  # (H*W*A, 4)
            top_n = min(config.pre_nms_top_n, objectness.shape[1])
            objectness, order = objectness.topk(top_n, dim=1, sorted=True)
            for image, (clip_h, clip_w) in enumerate(clip_sizes):
                boxes = decode_boxes(deltas[image, order[image]], grid[order[image]])
                boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=clip_w - 1)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=clip_h - 1)
                scores = objectness[image]
                keep = ((boxes[:, 2] - boxes[:, 0] + 1 >= config.rpn_min_size)
                        & (boxes[:, 3] - boxes[:, 1] + 1 >= config.rpn_min_size)).nonzero().squeeze(1)
                boxes, scores = boxes[keep], scores[keep]
                keep = nms_plus_one(boxes, scores, config.rpn_nms_threshold)[: config.post_nms_top_n]
                per_image[image].append((boxes[keep], scores[keep]))
        proposals = []
        for levels in per_image:
            boxes = torch.cat([b for b, _ in levels])
            scores = torch.cat([s for _, s in levels])
            top_n = min(config.fpn_post_nms_top_n, len(scores))
            proposals.append(boxes[scores.topk(top_n, sorted=True).indices])
        return proposals


class FPN2MLPFeatureExtractor(nn.Module):
    """RoIAlign from the box's FPN level, then fc6 -> ReLU -> fc7 -> ReLU."""

    def __init__(self, config: VmbConfig):
        super().__init__()
        self.config = config
        resolution = config.pooler_resolution
        self.fc6 = nn.Linear(config.fpn_channels * resolution * resolution, config.mlp_head_dim)
        self.fc7 = nn.Linear(config.mlp_head_dim, config.mlp_head_dim)
        self.first_level = round(-math.log2(config.pooler_scales[0]))
        self.last_level = round(-math.log2(config.pooler_scales[-1]))

    def levels(self, rois: torch.Tensor) -> torch.Tensor:
        """FPN eq. (1) on the "+1" area: index into the pooler's scales of each (K, 5) RoI."""
        area = (rois[:, 3] - rois[:, 1] + 1) * (rois[:, 4] - rois[:, 2] + 1)
        level = torch.floor(CANONICAL_LEVEL + torch.log2(torch.sqrt(area) / CANONICAL_SCALE + LEVEL_EPS))
        return level.clamp(min=self.first_level, max=self.last_level).to(torch.int64) - self.first_level

    def pool(self, features, rois: torch.Tensor) -> torch.Tensor:
        """(K, 5) RoIs [batch index, x1, y1, x2, y2] -> (K, C, R, R)."""
        roi_align = torchvision.ops.roi_align
        config = self.config
        size = (config.pooler_resolution, config.pooler_resolution)
        if len(config.pooler_scales) == 1:
            return roi_align(features[0], rois, size, config.pooler_scales[0], config.pooler_sampling_ratio,
                             aligned=False)
        levels = self.levels(rois)
        pooled = rois.new_zeros((len(rois), features[0].shape[1], *size), dtype=features[0].dtype)
        for level, scale in enumerate(config.pooler_scales):
            index = (levels == level).nonzero().squeeze(1)
            if len(index):
                # aligned=False: maskrcnn-benchmark's RoIAlign (no half-pixel offset, boxes at least 1 px)
                pooled[index] = roi_align(features[level], rois[index], size, scale, config.pooler_sampling_ratio,
                                          aligned=False)
        return pooled

    def forward(self, features, rois):
        pooled = self.pool(features, rois)
        fc6 = F.relu(self.fc6(pooled.flatten(1)))  # (K, mlp_head_dim): the stored feature
        fc7 = F.relu(self.fc7(fc6))
        return fc6, fc7


class FPNPredictor(nn.Module):
    """The class scores. The box regression (`bbox_pred`) is not built: 12-in-1's features and boxes
    are the RPN proposals', so its weights are read and listed as unused."""

    def __init__(self, config: VmbConfig):
        super().__init__()
        self.cls_score = nn.Linear(config.mlp_head_dim, config.num_classes)

    def forward(self, fc7):
        return self.cls_score(fc7)


class BoxHead(nn.Module):
    def __init__(self, config: VmbConfig):
        super().__init__()
        self.feature_extractor = FPN2MLPFeatureExtractor(config)
        self.predictor = FPNPredictor(config)


class VmbDetector(nn.Module):
    """The network of a maskrcnn-benchmark FPN Faster R-CNN, its state dict keys theirs
    (`backbone.body.*`, `backbone.fpn.*`, `rpn.*`, `roi_heads.box.*`)."""

    def __init__(self, config: VmbConfig):
        super().__init__()
        self.config = config.check()
        self.backbone = Backbone(config)
        self.rpn = RPN(config)
        self.roi_heads = nn.ModuleDict({"box": BoxHead(config)})

    def box_features(self, features, boxes: list, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """fc6 features (K, mlp_head_dim) and class logits (K, num_classes) of every box of every image
        (boxes: list of (n_i, 4) in resized pixels; K = sum n_i), `chunk` RoIs at a time."""
        rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), device=b.device, dtype=b.dtype), b], dim=1)
                          for i, b in enumerate(boxes)])  # (K, 5)
        head = self.roi_heads["box"]
        fc6, logits = [], []
        for start in range(0, len(rois), chunk):
            part6, part7 = head.feature_extractor(features, rois[start : start + chunk])
            fc6.append(part6)
            logits.append(head.predictor(part7))
        if not fc6:
            return (rois.new_zeros((0, self.config.mlp_head_dim)), rois.new_zeros((0, self.config.num_classes)))
        return torch.cat(fc6), torch.cat(logits)


# Checkpoint keys of parts that the features do not use, with the reason given to the user.
UNUSED_PARTS = {
    "roi_heads.box.predictor.bbox_pred.": "class-specific box regression (the features are the RPN proposals')",
    "roi_heads.box.predictor.cls_embed.": "attribute head",
    "roi_heads.box.predictor.attr_linear1.": "attribute head",
    "roi_heads.box.predictor.attr_linear2.": "attribute head",
    "roi_heads.mask.": "mask head",
    "roi_heads.keypoint.": "keypoint head",
}
# Buffers a checkpoint may lack (they follow from the config); when present they are loaded.
OPTIONAL_KEYS = ("rpn.anchor_generator.cell_anchors.",)


def read_checkpoint(path) -> dict:
    """A maskrcnn-benchmark checkpoint ({"model": state dict, ...}, or the bare state dict) loaded
    with weights_only=True; a "module." prefix (DataParallel) is dropped."""
    path = Path(path)
    where = f"--detector {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a clear one-line message, not a pickle traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{where}: not a PyTorch checkpoint ({type(exc).__name__}: {first})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: expected a maskrcnn-benchmark checkpoint ({{\"model\": state dict}})")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _shape(tensor) -> str:
    return "[" + ", ".join(str(s) for s in tensor.shape) + "]"


def load_detector_weights(model: VmbDetector, state: dict, where: str = "checkpoint") -> list[str]:
    """Load `state` (maskrcnn-benchmark keys) into `model`. Every model key must be there with its
    shape (else a one-line ValueError naming the key and both shapes); every other checkpoint key
    must belong to a part listed in UNUSED_PARTS (else a one-line ValueError naming it). Returns
    one line per unused part: "<prefix>* (<n> keys): <reason>"."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(OPTIONAL_KEYS)]
    if missing:
        key = missing[0]
        raise ValueError(f"{where}: missing key {key} (shape {_shape(expected[key])} for a "
                         f"{model.config.body} with this config); {len(missing)} key(s) missing in all")
    for key, target in expected.items():
        if key in state and state[key].shape != target.shape:
            raise ValueError(f"{where}: key {key} has shape {_shape(state[key])} in the checkpoint but "
                             f"{_shape(target)} for a {model.config.body} with this config")
    unused: dict[str, int] = {}
    for key in state:
        if key in expected:
            continue
        part = next((p for p in UNUSED_PARTS if key.startswith(p)), None)
        if part is None:
            raise ValueError(f"{where}: unexpected key {key} {_shape(state[key])}: not part of a "
                             f"{model.config.body} detector with this config (do the config and the checkpoint match?)")
        unused[part] = unused.get(part, 0) + 1
    model.load_state_dict({k: v.float() for k, v in state.items() if k in expected}, strict=False)
    return [f"{part}* ({count} keys): {UNUSED_PARTS[part]}" for part, count in unused.items()]


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """12-in-1's test scale: shorter side to min_size, unless the longer side would then round to
    more than max_size, in which case the longer side goes to max_size."""
    scale = min_size / min(height, width)
    if round(scale * max(height, width)) > max_size:
        scale = max_size / max(height, width)
    return scale


def _linear_taps(out_size: int, in_size: int, scale: float, device) -> tuple:
    """Bilinear taps along one axis for resize factor `scale`: output i samples the source at
    (i + 0.5) / scale - 0.5 (in float64), between pixels floor() and floor() + 1 with weight f (the
    fraction, then rounded to float32) on the second; positions before the first pixel or from the
    last one on take that pixel alone. -> (first, second, weight) tensors."""
    position = (np.arange(out_size) + 0.5) * (1.0 / scale) - 0.5
    first = np.floor(position)
    weight = (position - first).astype(np.float32)
    first = first.astype(np.int64)
    weight[(first < 0) | (first >= in_size - 1)] = 0
    first = np.clip(first, 0, in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    as_tensor = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return as_tensor(first), as_tensor(second), as_tensor(weight)


def _lerp(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """a + (b - a) * weight in float32 with one rounding for the multiply-add (a fused multiply-add,
    emulated in float64: (b - a) * weight is exact there)."""
    return (a.double() + (b - a).double() * weight.double()).float()


def resize_like_opencv(image: torch.Tensor, scale: float) -> torch.Tensor:
    """cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) of a (C, H, W)
    float32 tensor, as 12-in-1's script calls it: output size round(H * scale) x round(W * scale),
    source positions from the scale itself (not from the ratio of the rounded sizes), no
    antialiasing, along rows first. Equal to OpenCV 5.0's (opencv-python-headless, whose float
    resize runs in Intel IPP) to within one float32 rounding (docs/DETECTOR.md)."""
    _, height, width = image.shape
    out_h, out_w = round(height * scale), round(width * scale)
    x0, x1, wx = _linear_taps(out_w, width, scale, image.device)
    y0, y1, wy = _linear_taps(out_h, height, scale, image.device)
    rows = _lerp(image[:, :, x0], image[:, :, x1], wx)  # (C, H, out_w): each source row resampled
    return _lerp(rows[:, y0, :], rows[:, y1, :], wy[:, None])  # (C, out_h, out_w)


@dataclass
class Batch:
    """Images prepared as the detector's input."""

    images: torch.Tensor  # (B, 3, H, W) normalised, zero-padded to a multiple of size_divisibility
    scales: list  # resize factor of each image
    sizes: list  # (height, width) of each original image
    clip_sizes: list  # (height, width) each image's proposals are clipped to: its resized size padded


@dataclass
class Detections:
    """The detector's output for one image before 12-in-1's selection (the script's `output[0]`)."""

    proposals: torch.Tensor  # (n, 4) RPN proposals in the resized image's pixels, best objectness first
    fc6: torch.Tensor  # (n, mlp_head_dim)
    scores: torch.Tensor  # (n, num_classes) softmax, background in column 0
    scale: float


@dataclass
class Regions:
    """What is stored for one image."""

    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2 in the original image's pixels
    features: np.ndarray  # (n, mlp_head_dim) float32 fc6
    cls_prob: np.ndarray  # (n, num_classes) float32, background in column 0
    max_conf: np.ndarray | None = field(default=None)  # (n,) selection score (None for given boxes)


def per_class_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, threshold: float,
                  one_call: bool | None = None) -> torch.Tensor:
    """NMS within each class ("+1" IoU), indices kept. On a GPU one NMS call over boxes shifted apart
    per class (in float64, so the shift costs no precision); on a CPU, torchvision's per-class loop
    (faster there). Both keep the same boxes."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    grown = boxes.double()
    grown[:, 2:] += 1
    scores = scores.double()
    if one_call is None:
        one_call = boxes.is_cuda
    if one_call:
        span = float(grown.max() - grown.min()) + 2
        return torchvision.ops.nms(grown + (classes.double() * span)[:, None], scores, threshold)
    return torchvision.ops.batched_nms(grown, scores, classes, threshold)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, num_features: int = 100, min_boxes: int = 1,
                      threshold: float = 0.0, nms_threshold: float = SELECTION_NMS) -> tuple[torch.Tensor, torch.Tensor]:
    """12-in-1's selection. boxes (n, 4) in original pixels, scores (n, C) with background in column 0.

    max_conf[i] = the best score[i, c] over foreground classes c whose NMS (over all n boxes, ranked
    by score[:, c]) keeps box i and with score[i, c] > threshold; 0 if none. Returns (kept indices,
    max_conf): the boxes with max_conf > 0 ranked by it, at most num_features, topped up to min_boxes
    (never more than n) with the next ones in ranking order (max_conf 0: proposal order).

    The script runs one NMS per class over every box (1600 x 1000 boxes). The result only needs the
    (box, class) pairs that can decide a box's rank, so NMS runs on the pairs scoring at least tau,
    the budget-th best score: a pair below tau cannot suppress one above it (suppression goes from
    higher to lower scores within a class), so every box whose max_conf >= tau gets it exactly. When
    at least num_features boxes reach tau, the rest cannot enter the ranking; otherwise the budget
    grows until every pair above the threshold is in.
    """
    n = len(boxes)
    foreground = scores[:, 1:]
    eligible = foreground > threshold
    total = int(eligible.sum())
    budget = max(4 * n, 4096)
    while True:
        if total <= budget:
            candidates = eligible
        else:
            tau = foreground[eligible].topk(budget, sorted=False).values.min()
            candidates = eligible & (foreground >= tau)
        box_index, class_index = candidates.nonzero(as_tuple=True)
        pair_scores = foreground[box_index, class_index]
        keep = per_class_nms(boxes[box_index], pair_scores, class_index, nms_threshold)
        max_conf = torch.zeros(n, dtype=scores.dtype, device=scores.device)
        max_conf.scatter_reduce_(0, box_index[keep], pair_scores[keep], reduce="amax")
        confident = int((max_conf > 0).sum())
        if total <= budget or confident >= num_features:
            break
        budget *= 4
    order = torch.sort(max_conf, descending=True, stable=True).indices
    count = min(max(min(confident, num_features), min_boxes), n)
    return order[:count], max_conf


class VmbExtractor:
    """Images -> regions with a maskrcnn-benchmark FPN Faster R-CNN (module docstring).

    `VmbExtractor(checkpoint, config_yaml)` reads the two files; `VmbExtractor.from_state(config,
    state)` takes a VmbConfig and a state dict. `notes` lists what was read but not used (config keys,
    checkpoint parts), for the caller to show.
    """

    def __init__(self, checkpoint, config, device=None, num_features: int = 100, min_boxes: int = 10,
                 confidence_threshold: float = 0.0, box_chunk: int = 1000, _state: dict | None = None):
        if isinstance(config, VmbConfig):
            config_notes = []
        else:
            config, unused = read_config(config)
            config_notes = [f"detector config: {len(unused)} key(s) not used: {', '.join(unused)}"] if unused else []
        if not 1 <= min_boxes <= num_features:
            raise ValueError(f"need 1 <= --min-boxes <= --num-features, got {min_boxes}, {num_features}")
        state = _state if _state is not None else read_checkpoint(checkpoint)
        where = f"--detector {checkpoint}" if _state is None else "state dict"
        model = VmbDetector(config)
        weight_notes = load_detector_weights(model, state, where)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.config = config
        self.num_features, self.min_boxes = num_features, min_boxes
        self.confidence_threshold = confidence_threshold
        self.box_chunk = box_chunk
        self.notes = config_notes + [f"detector checkpoint: not used: {line}" for line in weight_notes]
        self.dim = config.mlp_head_dim
        self._mean = torch.tensor(config.pixel_mean, dtype=torch.float64, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(config.pixel_std, dtype=torch.float32, device=self.device).view(3, 1, 1)

    @classmethod
    def from_state(cls, config: VmbConfig, state: dict, **options) -> "VmbExtractor":
        return cls(None, config, _state=state, **options)

    def prepare(self, images) -> Batch:
        """HxWx3 uint8 RGB arrays -> the padded, normalised batch (step 1 of the module docstring)."""
        config = self.config
        tensors, scales, sizes = [], [], []
        for image in images:
            height, width = image.shape[:2]
            x = torch.tensor(np.ascontiguousarray(image), device=self.device).permute(2, 0, 1)  # (3, H, W) RGB
            x = x.flip(0).double() if config.to_bgr255 else x.double() / 255.0
            # float32(float64 pixel - mean), as the script's numpy subtraction
            x = (x - self._mean).float() / self._std
            scale = resize_scale(height, width, config.min_size, config.max_size)
            x = resize_like_opencv(x, scale)
            tensors.append(x)
            scales.append(scale)
            sizes.append((height, width))
        step = config.size_divisibility
        padded = [(math.ceil(t.shape[1] / step) * step, math.ceil(t.shape[2] / step) * step) for t in tensors]
        batch = torch.zeros(len(tensors), 3, max(h for h, _ in padded), max(w for _, w in padded), device=self.device)
        for i, t in enumerate(tensors):
            batch[i, :, : t.shape[1], : t.shape[2]] = t
        return Batch(batch, scales, sizes, padded)

    def detect(self, images) -> list[Detections]:
        """Proposals, fc6 features and class scores of every proposal (steps 1-4), one per image."""
        return self.detect_batch(self.prepare(images))

    @torch.inference_mode()
    def detect_batch(self, batch: Batch) -> list[Detections]:
        """`detect` of an already prepared batch."""
        features = self.model.backbone(batch.images)
        proposals = self.model.rpn(features, batch.clip_sizes)
        return self._heads(features, proposals, batch)

    def _heads(self, features, boxes, batch: Batch) -> list[Detections]:
        fc6, logits = self.model.box_features(features, boxes, self.box_chunk)
        scores = F.softmax(logits, dim=-1)
        counts = [len(b) for b in boxes]
        return [Detections(b, f, s, scale) for b, f, s, scale in
                zip(boxes, fc6.split(counts), scores.split(counts), batch.scales)]

    @torch.inference_mode()
    def features_of_boxes(self, images, boxes) -> list[Detections]:
        """fc6 features and class scores of given boxes ((n_i, 4) x1, y1, x2, y2 original pixels)."""
        batch = self.prepare(images)
        features = self.model.backbone(batch.images)
        resized = [torch.as_tensor(np.asarray(b, dtype=np.float32), device=self.device) * scale
                   for b, scale in zip(boxes, batch.scales)]
        return self._heads(features, resized, batch)

    def __call__(self, images, boxes=None) -> list[Regions]:
        """Detected regions (12-in-1's selection), or the features of `boxes` when given."""
        if boxes is not None:
            out = []
            for given, found in zip(boxes, self.features_of_boxes(images, boxes)):
                out.append(Regions(np.asarray(given, dtype=np.float32).reshape(-1, 4),
                                   found.fc6.float().cpu().numpy(), found.scores.float().cpu().numpy()))
            return out
        out = []
        with torch.inference_mode():
            for (height, width), found in zip([image.shape[:2] for image in images], self.detect(images)):
                original = found.proposals / found.scale  # the script's dets: proposals / im_scale
                keep, max_conf = select_detections(original, found.scores, self.num_features, self.min_boxes,
                                                   self.confidence_threshold)
                kept = original[keep]
                kept[:, 0::2] = kept[:, 0::2].clamp(0, width)
                kept[:, 1::2] = kept[:, 1::2].clamp(0, height)
                # The +1 convention lets a proposal under one pixel wide end before it starts.
                kept[:, 2:] = torch.maximum(kept[:, 2:], kept[:, :2])
                out.append(Regions(kept.float().cpu().numpy(), found.fc6[keep].float().cpu().numpy(),
                                   found.scores[keep].float().cpu().numpy(), max_conf[keep].cpu().numpy()))
        return out
