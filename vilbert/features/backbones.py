"""Backbones that turn (image, boxes) into one feature vector per box.

Every backbone is a callable `backbone(images, boxes) -> features`: `images` a list of HxWx3 uint8
RGB arrays, `boxes` a list of (n_i, 4) float32 pixel boxes, the result a list of (n_i, D) float32
arrays.

`pixels` (PixelBackbone): a fixed, documented descriptor with no weights, made for the demo world
(flat-coloured shapes on a background), where no pretrained CNN exists offline. For each box:

1. Background colour b = the per-channel median of a ring of pixels just outside the box (margin
   max(2, 10% of the longer box side), clipped to the image); if the box covers the whole image, the
   median of the box's own border pixels. Foreground = box pixels whose largest channel difference
   from b exceeds 0.12 (on a 0-1 scale).
2. Descriptor (DESCRIPTOR_DIM = 128 values, each scaled by fixed constants to about [-1, 1]):
   colour (46): foreground mean RGB (3), foreground std RGB (3), background RGB (3), Gaussian
     responses (sigma 0.25) of the foreground mean to the 27 colours of the {0, .5, 1}^3 RGB grid,
     and hue (cos, sin, weighted by saturation), saturation and value of the foreground mean (4);
   shape (80): the foreground mask of the box area-averaged to 8x8 (64) and 4x4 (16);
   size and place (7): foreground fill ratio, log aspect ratio log(w/h), box area / image area and
     its square root, box centre x/W and y/H, foreground fraction of the ring (clutter);
   a constant 1 (1).
3. Feature = descriptor @ P, P a fixed (128, dim) Gaussian matrix scaled by 1/sqrt(128), drawn from
   numpy.random.default_rng(PIXEL_SEED). No nonlinearity: a linear probe (and ViLBERT's linear image
   embedding) can recover everything the descriptor holds; colour, shape and size are separable.

`resnet50` / `resnet101` (ResNetBackbone): the bottom-up-attention head on a torchvision ResNet:
conv1..layer3 (stride 16), RoIAlign 14x14 per box on that map, layer4 (to 7x7), average pooling ->
2048-d. Weights from a local file (a torchvision ResNet state dict, or a detector checkpoint whose
backbone is one: `backbone.body.*` keys); random weights only when asked (tests).
"""

from __future__ import annotations

import colorsys
import functools
from pathlib import Path

import numpy as np

PIXEL_SEED = 20190806
DESCRIPTOR_DIM = 128
FOREGROUND_THRESHOLD = 0.12
_ANCHORS = np.array([(r, g, b) for r in (0, 0.5, 1) for g in (0, 0.5, 1) for b in (0, 0.5, 1)], dtype=np.float32)


@functools.lru_cache(maxsize=4)
def pixel_projection(dim: int) -> np.ndarray:
    """The fixed (DESCRIPTOR_DIM, dim) projection of the pixels backbone."""
    rng = np.random.default_rng(PIXEL_SEED)
    matrix = rng.standard_normal((DESCRIPTOR_DIM, dim)) / np.sqrt(DESCRIPTOR_DIM)
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def _area_average(mask: np.ndarray, size: int) -> np.ndarray:
    """(h, w) float mask -> (size, size) means over a size x size grid of cells (cells may overlap)."""
    h, w = mask.shape
    rows = np.linspace(0, h, size + 1)
    cols = np.linspace(0, w, size + 1)
    # Each cell covers at least one pixel, also when the box is smaller than the grid.
    r0 = np.minimum(np.floor(rows[:-1]).astype(int), h - 1)
    r1 = np.maximum(np.ceil(rows[1:]).astype(int), r0 + 1)
    c0 = np.minimum(np.floor(cols[:-1]).astype(int), w - 1)
    c1 = np.maximum(np.ceil(cols[1:]).astype(int), c0 + 1)
    # Summed-area table: each cell mean in O(1).
    table = np.zeros((h + 1, w + 1), dtype=np.float64)
    table[1:, 1:] = mask.cumsum(0).cumsum(1)
    total = table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0]
    area = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return (total / area).astype(np.float32)


def pixel_descriptor(image: np.ndarray, box) -> np.ndarray:
    """The DESCRIPTOR_DIM-long descriptor of one box of an HxWx3 uint8 image (module docstring)."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    c0 = int(np.clip(np.floor(x1), 0, width - 1))
    r0 = int(np.clip(np.floor(y1), 0, height - 1))
    c1 = int(np.clip(np.ceil(x2), c0 + 1, width))
    r1 = int(np.clip(np.ceil(y2), r0 + 1, height))
    crop = image[r0:r1, c0:c1].astype(np.float32) / 255.0  # (h, w, 3)
    h, w = crop.shape[:2]

    margin = max(2, int(round(0.1 * max(h, w))))
    R0, R1 = max(0, r0 - margin), min(height, r1 + margin)
    C0, C1 = max(0, c0 - margin), min(width, c1 + margin)
    outer = image[R0:R1, C0:C1].astype(np.float32) / 255.0
    ring = np.ones(outer.shape[:2], dtype=bool)
    ring[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0] = False
    ring_pixels = outer[ring]  # (m, 3)
    if len(ring_pixels) == 0:
        border = np.ones((h, w), dtype=bool)
        border[1:-1, 1:-1] = False
        ring_pixels = crop[border]
    background = np.median(ring_pixels, axis=0)  # (3,)
    ring_clutter = float((np.abs(ring_pixels - background).max(-1) > FOREGROUND_THRESHOLD).mean())

    foreground = np.abs(crop - background).max(-1) > FOREGROUND_THRESHOLD  # (h, w)
    fg_pixels = crop[foreground]
    if len(fg_pixels) == 0:
        fg_pixels = crop.reshape(-1, 3)
    fg_mean = fg_pixels.mean(axis=0)
    fg_std = fg_pixels.std(axis=0)
    anchors = np.exp(-((fg_mean[None] - _ANCHORS) ** 2).sum(-1) / (2 * 0.25**2))  # (27,)
    hue, sat, val = colorsys.rgb_to_hsv(*(float(c) for c in fg_mean))
    hsv = [sat * np.cos(2 * np.pi * hue), sat * np.sin(2 * np.pi * hue), 2 * sat - 1, 2 * val - 1]

    mask = foreground.astype(np.float32)
    mask8 = _area_average(mask, 8).reshape(-1)
    mask4 = _area_average(mask, 4).reshape(-1)
    box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    relative_area = box_w * box_h / (width * height)
    size = [
        2 * float(mask.mean()) - 1,
        float(np.log(box_w / box_h)),
        5 * relative_area - 0.5,
        3 * np.sqrt(relative_area) - 1,
        2 * (x1 + x2) / (2 * width) - 1,
        2 * (y1 + y2) / (2 * height) - 1,
        2 * ring_clutter - 1,
    ]
    descriptor = np.concatenate(
        [
            2 * fg_mean - 1,
            4 * fg_std,
            2 * background - 1,
            2 * anchors - 1,
            hsv,
            2 * mask8 - 1,
            2 * mask4 - 1,
            size,
            [1.0],
        ]
    ).astype(np.float32)
    assert descriptor.shape == (DESCRIPTOR_DIM,), descriptor.shape
    return descriptor


class PixelBackbone:
    """The fixed `pixels` descriptor projected to `dim` (2048) values; see the module docstring."""

    name = "pixels"

    def __init__(self, dim: int = 2048):
        self.dim = dim
        self.projection = pixel_projection(dim)
        self.projection64 = self.projection.astype(np.float64)

    def __call__(self, images, boxes):
        descriptors = np.stack(
            [pixel_descriptor(image, box) for image, image_boxes in zip(images, boxes) for box in image_boxes]
        )  # (N, 128) for all boxes of the batch
        # One product per batch, in float64: the float32 result of a box does not depend on which
        # other boxes share its batch (so sharded and single-process runs store identical features).
        features = (descriptors.astype(np.float64) @ self.projection64).astype(np.float32)  # (N, dim)
        counts = np.cumsum([0] + [len(b) for b in boxes])
        return [features[counts[i] : counts[i + 1]] for i in range(len(boxes))]


def load_resnet_weights(model, path) -> None:
    """Load a local ResNet state dict (or a detector checkpoint's `backbone.body.*`) into `model`.

    Every trunk weight (conv1..layer4) must be present; the classifier (`fc.*`) may be absent.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a clear one-line message, not a pickle traceback
        raise ValueError(f"--weights {path}: not a PyTorch state dict ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"--weights {path}: expected a state dict, found {type(state).__name__}")
    for prefix in ("backbone.body.", "module.", "backbone."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    wanted = {k for k in model.state_dict() if not k.startswith("fc.")}
    missing = sorted(wanted - set(state))
    if missing:
        raise ValueError(
            f"--weights {path}: {len(missing)} ResNet weights missing (e.g. {', '.join(missing[:3])}); "
            "expected a torchvision ResNet state dict"
        )
    # Detector backbones use frozen batch norm, which has no num_batches_tracked: that is fine.
    state = {k: v for k, v in state.items() if k in wanted}
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise ValueError(f"--weights {path}: shapes do not match this ResNet ({first})") from None


class ResNetBackbone:
    """ResNet-50/101 with the bottom-up head: RoIAlign on the stride-16 map, layer4, average pool."""

    def __init__(
        self,
        depth: int = 101,
        weights=None,
        random_weights: bool = False,
        device=None,
        image_size: int = 600,
        max_size: int = 1000,
        roi_chunk: int = 256,
    ):
        import torch
        import torchvision

        if weights is None and not random_weights:
            raise ValueError(
                "the ResNet backbone needs weights: pass --weights FILE (a torchvision ResNet state dict, "
                "e.g. resnet101-*.pth) or --random-weights (meaningless features, for tests only)"
            )
        builder = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth]
        model = builder(weights=None)
        if weights is not None:
            load_resnet_weights(model, weights)
        self.name = f"resnet{depth}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.eval().to(self.device)
        self.stem = torch.nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3
        )
        self.head = model.layer4
        self.image_size = image_size
        self.max_size = max_size
        self.roi_chunk = roi_chunk
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(3, 1, 1)
        self.dim = 2048

    def _scale(self, height: int, width: int) -> float:
        # Bottom-up attention's test scale: shorter side to image_size, longer side at most max_size.
        scale = self.image_size / min(height, width)
        return min(scale, self.max_size / max(height, width))

    def __call__(self, images, boxes):
        import torch
        import torch.nn.functional as F
        from torchvision.ops import roi_align

        # fp16 autocast on the GPU (the store keeps float16 anyway); plain float32 on the CPU.
        autocast = torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda")
        with torch.inference_mode(), autocast:
            tensors, scales = [], []
            for image in images:
                h, w = image.shape[:2]
                scale = self._scale(h, w)
                x = torch.tensor(image, device=self.device).permute(2, 0, 1).float() / 255.0
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
                tensors.append((x - self.mean) / self.std)
                scales.append(scale)
            # One padded batch (B, 3, Hmax, Wmax); padding is zero after normalisation.
            height = max(t.shape[1] for t in tensors)
            width = max(t.shape[2] for t in tensors)
            batch = torch.zeros(len(tensors), 3, height, width, device=self.device)
            for i, t in enumerate(tensors):
                batch[i, :, : t.shape[1], : t.shape[2]] = t
            feature_map = self.stem(batch)  # (B, 1024, H/16, W/16)
            rois = torch.cat(
                [
                    torch.cat(
                        [
                            torch.full((len(b), 1), float(i), device=self.device),
                            torch.as_tensor(np.asarray(b, dtype=np.float32), device=self.device) * scales[i],
                        ],
                        dim=1,
                    )
                    for i, b in enumerate(boxes)
                ]
            )  # (N, 5) batch index, x1, y1, x2, y2 in resized pixels
            pooled = []
            for start in range(0, len(rois), self.roi_chunk):
                regions = roi_align(
                    feature_map, rois[start : start + self.roi_chunk], output_size=(14, 14),
                    spatial_scale=1 / 16, sampling_ratio=2, aligned=True,
                )  # (chunk, 1024, 14, 14)
                pooled.append(self.head(regions).mean(dim=(2, 3)))  # (chunk, 2048)
            features = torch.cat(pooled).float().cpu().numpy()
        counts = np.cumsum([0] + [len(b) for b in boxes])
        return [features[counts[i] : counts[i + 1]] for i in range(len(boxes))]


def build_backbone(name: str, weights=None, random_weights: bool = False, device=None, **options):
    """`pixels`, `resnet50` or `resnet101` -> a backbone callable."""
    if name == "pixels":
        if weights is not None:
            raise ValueError("--backbone pixels has no weights; drop --weights")
        return PixelBackbone(dim=options.get("dim", 2048))
    if name in ("resnet50", "resnet101"):
        resnet_options = {k: v for k, v in options.items() if k in ("image_size", "max_size", "roi_chunk")}
        return ResNetBackbone(int(name[6:]), weights, random_weights, device, **resnet_options)
    raise ValueError(f"unknown backbone {name!r}: choose pixels, resnet50 or resnet101")
