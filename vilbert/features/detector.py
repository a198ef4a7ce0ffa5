"""Boxes from a torchvision Faster R-CNN checkpoint the user supplies (`--boxes detector`).

The checkpoint is a plain state dict of one of torchvision's Faster R-CNN builders (`--detector-arch`),
loaded with `weights_only=True`; the number of classes is read from its box predictor. As in
bottom-up attention, an image keeps the boxes scoring at least `min_score`, but no fewer than
`min_boxes` and no more than `max_boxes` (10-100, usually 36; REFERENCE section 4). For every kept
box the detector's box head is run once more to give its full class distribution (background in
column 0), which is stored as `cls_prob`, the target of ViLBERT's masked-region KL objective.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ARCHITECTURES = (
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
)


class Detector:
    """`detector(image) -> ((n, 4) float32 pixel boxes, (n, C) float32 class distribution)`."""

    def __init__(self, checkpoint, arch: str = "fasterrcnn_resnet50_fpn", device=None, min_boxes: int = 10,
                 max_boxes: int = 36, min_score: float = 0.2):
        import torch
        import torchvision

        if arch not in ARCHITECTURES:
            raise ValueError(f"--detector-arch {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
        if not 1 <= min_boxes <= max_boxes:
            raise ValueError(f"need 1 <= --min-boxes <= --max-boxes, got {min_boxes}, {max_boxes}")
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--detector {checkpoint}: no such file")
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"--detector {checkpoint}: not a PyTorch state dict ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None
        for wrapper in ("model", "state_dict", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        predictor = "roi_heads.box_predictor.cls_score.weight"
        if not isinstance(state, dict) or predictor not in state:
            raise ValueError(f"--detector {checkpoint}: not a torchvision Faster R-CNN state dict (no {predictor})")
        num_classes = state[predictor].shape[0]
        model = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None, num_classes=num_classes)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"--detector {checkpoint}: does not match {arch} ({first})") from None
        # Keep every scored box; the selection below applies min_score / min_boxes / max_boxes.
        model.roi_heads.score_thresh = 0.0
        model.roi_heads.detections_per_img = max_boxes
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.min_boxes, self.max_boxes, self.min_score = min_boxes, max_boxes, min_score
        self.num_classes = num_classes

    def __call__(self, image: np.ndarray):
        import torch

        model = self.model
        height, width = image.shape[:2]
        with torch.inference_mode():
            x = torch.tensor(image, device=self.device).permute(2, 0, 1).float() / 255.0
            images, _ = model.transform([x])
            features = model.backbone(images.tensors)
            proposals, _ = model.rpn(images, features)
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
            boxes, scores = detections[0]["boxes"], detections[0]["scores"]  # sorted by score, resized coords
            wanted = int((scores >= self.min_score).sum())
            wanted = min(max(wanted, self.min_boxes), self.max_boxes)
            if len(boxes) < wanted:
                # Too few detections (an untrained detector): top up with the best RPN proposals.
                boxes = torch.cat([boxes, proposals[0][: wanted - len(boxes)]])
            boxes = boxes[:wanted]
            pooled = model.roi_heads.box_roi_pool(features, [boxes], images.image_sizes)
            class_logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
            cls_prob = class_logits.float().softmax(-1)  # (n, C), background in column 0
            # Back to the pixels of the original image.
            resized_h, resized_w = images.image_sizes[0]
            scale = torch.tensor([width / resized_w, height / resized_h] * 2, device=boxes.device)
            boxes = boxes * scale
        return boxes.float().cpu().numpy(), cls_prob.cpu().numpy()
