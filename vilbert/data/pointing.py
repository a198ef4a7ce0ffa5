"""What the pointing readers share (Visual7W pointing, GuessWhat?! guessing; task type V-logit-mc):
pick the answer box among an item's given candidate boxes.

The candidates are ground-truth boxes of the image. The ground-truth store (features_h5path2) holds
each image's boxes in the order of their ids (Visual7W box ids, GuessWhat object ids, sorted), as
12-in-1's stores; a candidate is found by its position there, and its stored box must agree with the
annotation's (IoU >= 0.5), so a store in another order is an error, not silent noise. The
ground-truth boxes come first in the region list, then the detections (features_h5path1), through
pad_regions(gt_item=...). 12-in-1 puts the detections first (exactly 101 rows) and the ground-truth
boxes after them; regions have no position embedding, so the order only decides which regions a
too-long list loses: here never a candidate.

An item:
    input_ids, token_type_ids, attention_mask (T,); image arrays (R, ...)
    candidate_regions (C,) long   the region row of each candidate (0 for a padding candidate)
    candidate_mask (C,) long      1 = a real candidate; C = the most candidates of any item of the split
    target (C,) float32           IoU of each candidate's box with the answer box, values below 0.5
                                  set to 0 (12-in-1, on every split)
    index

Subclasses read their annotations into `entries` and `texts`, then call `_encode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from vilbert.data.collate import TEXT_KEYS, TaskDataset, region_arrays
from vilbert.tasks.metrics import box_iou

TARGET_IOU_THRESHOLD = 0.5  # candidate targets below this IoU with the answer box are 0 (12-in-1)
STORE_MATCH_IOU = 0.5  # a candidate's stored box must overlap its annotated box at least this much


def xywh_to_xyxy(box) -> list[float]:
    """[x, y, width, height] -> [x1, y1, x2, y2]."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


@dataclass
class PointingEntry:
    """One question: its image, the positions of its candidates among the image's ground-truth
    boxes, their annotated boxes (x1, y1, x2, y2 pixels), and which candidate is the answer."""

    image_id: Union[int, str]
    candidates: list[int]
    candidate_boxes: list[list[float]]
    answer: int


def candidate_positions(candidate_ids: list, image_ids: list) -> list[int]:
    """Positions of a question's candidates (sorted by id, as 12-in-1) among its image's boxes
    (sorted unique ids): the candidates' rows in the ground-truth store."""
    order = {box_id: k for k, box_id in enumerate(sorted(set(image_ids)))}
    return [order[box_id] for box_id in sorted(candidate_ids)]


class PointingDataset(TaskDataset):
    """Base of the V-logit-mc readers (see the module docstring)."""

    entries: list[PointingEntry]
    texts: list[str]

    def __init__(self, config, split: str, tokenizer):
        super().__init__(config, split, tokenizer, use_gt_store=True)
        self.num_labels = 1

    def _encode(self, reader: str, files: list[Path]) -> None:
        """Tokenise the texts once (cached under dataroot/cache, keyed by the annotation files)."""
        if not self.entries:
            raise self.fail(f"no questions in {', '.join(str(f) for f in files)}")
        self.max_candidates = max(len(e.candidates) for e in self.entries)
        self.text = self.encode_cached(reader, files, self.texts)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        padded = self.regions(entry.image_id, with_gt=True)
        rows = 1 + np.asarray(entry.candidates)  # row 0 is the global region, then the gt boxes
        if rows.max() > padded.num_gt:
            raise self.fail(f"image {entry.image_id}: the ground-truth store has {padded.num_gt} boxes (within "
                            f"max_region_num {self.max_region_num}), a candidate is box {rows.max() - 1} "
                            "of its sorted ids")
        stored = torch.from_numpy(padded.boxes[rows])  # (c, 4) pixels
        annotated = torch.tensor(entry.candidate_boxes, dtype=torch.float32)
        if (box_iou(stored, annotated) < STORE_MATCH_IOU).any():
            raise self.fail(f"image {entry.image_id}: the ground-truth store's boxes are not the candidates' boxes "
                            "(expected: the image's boxes in the order of their ids)")
        iou = box_iou(stored, annotated[entry.answer]).numpy()  # (c,)
        iou[iou < TARGET_IOU_THRESHOLD] = 0.0

        count = len(rows)
        sample = {key: self.text[key][index] for key in TEXT_KEYS}
        sample.update(region_arrays(padded))
        sample["candidate_regions"] = np.zeros(self.max_candidates, dtype=np.int64)
        sample["candidate_regions"][:count] = rows
        sample["candidate_mask"] = (np.arange(self.max_candidates) < count).astype(np.int64)
        sample["target"] = np.zeros(self.max_candidates, dtype=np.float32)
        sample["target"][:count] = iou
        sample["index"] = index
        return sample

    def result_record(self, index: int, candidate: int) -> dict:
        """The result record of an item whose chosen candidate is `candidate` (its position)."""
        raise NotImplementedError
