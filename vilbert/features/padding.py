"""pad_regions: the one truncation/padding path every dataset uses, with the ground-truth merge.

Row 0 of the result is always the global region (the mean of the real regions that are kept,
location [0,0,1,1,1], box = the whole image), so `max_region_num` counts it: 37 = 36 regions + 1 as
in the originals' pretraining.

Merging a ground-truth store (VCR, RefCOCO+): the ground-truth regions come first, then the
detections, then one global row over both. Deliberate differences from the originals, which differ
from each other:
- 12-in-1 VCR concatenates the two stores' rows as they are, so the result holds two "global" rows
  (the ground-truth one at row 0, the detections' one in the middle of the regions, attended to as
  if it were an object). We keep one global row, recomputed over every kept region.
- 12-in-1 RefCOCO+ puts the detections first and the ground truth after them, and keeps the
  detections' global row (mean of detections only). We put ground truth first for every task, so
  ground-truth object i is always row i + 1 (VCR's object references index it directly).
- When regions are truncated, the originals keep the global mean over all stored regions; we take
  the mean over the regions the model actually sees, matching the pretraining masking, which also
  recomputes the global row from the regions that remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vilbert.features.reader import GLOBAL_LOCATION, RegionItem


@dataclass
class PaddedRegions:
    """Fixed-size region arrays for one image (numpy; the default collate turns them into tensors).

    R = max_region_num. Rows [1, num_real) are the kept regions, ground truth first.
    """

    features: np.ndarray  # (R, D) float32, row 0 = mean of the kept regions, padding rows 0
    locations: np.ndarray  # (R, 5) float32, row 0 = [0,0,1,1,1], padding rows 0
    mask: np.ndarray  # (R,) int64, 1 = real region (global included), 0 = padding
    boxes: np.ndarray  # (R, 4) float32 pixels, row 0 = [0, 0, W, H], padding rows 0
    cls_prob: np.ndarray | None  # (R, C) float32, rows 0 and padding 0; None unless every input has it
    num_real: int  # rows with mask 1, the global row included
    num_gt: int  # how many of rows 1.. come from gt_item (0 without it)


def pad_regions(item: RegionItem, max_region_num: int, gt_item: RegionItem | None = None) -> PaddedRegions:
    """Truncate/pad the regions of `item` (after those of `gt_item`, if given) to max_region_num rows."""
    if max_region_num < 2:
        raise ValueError(f"max_region_num must be at least 2 (the global row and one region), got {max_region_num}")
    sources = [item] if gt_item is None else [gt_item, item]
    dims = {s.features.shape[1] for s in sources}
    if len(dims) > 1:
        raise ValueError(
            f"image {item.image_id}: the ground-truth and detection features differ in width "
            f"({gt_item.features.shape[1]} vs {item.features.shape[1]})"
        )
    # Rows 1: of each source are its regions (row 0 is that source's own global row).
    features = np.concatenate([s.features[1:] for s in sources])  # (n_total, D)
    locations = np.concatenate([s.locations[1:] for s in sources])  # (n_total, 5)
    boxes = np.concatenate([s.boxes for s in sources])  # (n_total, 4)
    class_widths = {None if s.cls_prob is None else s.cls_prob.shape[1] for s in sources}
    with_cls = None not in class_widths and len(class_widths) == 1

    kept = min(features.shape[0], max_region_num - 1)
    num_real = kept + 1
    dim = features.shape[1]
    out_features = np.zeros((max_region_num, dim), dtype=np.float32)
    out_features[1:num_real] = features[:kept]
    out_features[0] = out_features[1:num_real].mean(axis=0)
    out_locations = np.zeros((max_region_num, 5), dtype=np.float32)
    out_locations[0] = GLOBAL_LOCATION
    out_locations[1:num_real] = locations[:kept]
    out_boxes = np.zeros((max_region_num, 4), dtype=np.float32)
    out_boxes[0] = (0.0, 0.0, item.image_w, item.image_h)
    out_boxes[1:num_real] = boxes[:kept]
    mask = np.zeros(max_region_num, dtype=np.int64)
    mask[:num_real] = 1
    out_cls = None
    if with_cls:
        cls_prob = np.concatenate([s.cls_prob for s in sources])
        out_cls = np.zeros((max_region_num, cls_prob.shape[1]), dtype=np.float32)
        out_cls[1:num_real] = cls_prob[:kept]
    num_gt = 0 if gt_item is None else min(len(gt_item.boxes), kept)
    return PaddedRegions(out_features, out_locations, mask, out_boxes, out_cls, num_real, num_gt)
