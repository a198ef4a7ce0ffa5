"""RefCOCO+ (and RefCOCO, RefCOCOg) in the refer-toolkit layout (REFERENCE 4).

    dataroot/<task name>/refs(unc).p     a pickle: list of refs {ref_id, ann_id, image_id, split,
                                         sentences: [{sent_id, sent, raw?, tokens}]}
    dataroot/<task name>/instances.json  COCO: images, annotations (bbox = x, y, w, h), categories

The pickle is read with vilbert.safe_pickle (plain containers only), never with pickle.load. Splits
are the toolkit's: "train", "val", "testA", "testB" select refs of that split; "test" selects every
test split.

One item per sentence. Regions: on the training split the ground-truth boxes (features_h5path2)
come first, then the detections (features_h5path1); on other splits the detections alone, as the
originals, so evaluation grounds into detector boxes. Target (R,): the IoU of each region's box
with the referred box (0 on padding); on the training split values below 0.5 are set to 0.

Item extras: target (R,) float32, region_boxes (R, 4) pixels (row 0 = whole image), ref_box (4,)
pixels x1, y1, x2, y2, ref_id, sent_id, index.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

from vilbert.data.cache import cache_key, cached_arrays
from vilbert.data.collate import TEXT_KEYS, TaskDataset, encode_text, region_arrays
from vilbert.tasks.config import TaskConfig, TaskConfigError
from vilbert.tasks.metrics import box_iou

TRAIN_IOU_THRESHOLD = 0.5  # training targets below this IoU are 0 (REFERENCE 4)


def refer_folder(config: TaskConfig) -> Path:
    """The folder holding refs(unc).p: dataroot/<name>/ as the toolkit, or dataroot itself."""
    root = config.require(config.dataroot, "dataroot")
    for folder in (root / config.name, root):
        if (folder / "refs(unc).p").is_file():
            return folder
    raise TaskConfigError(f"{config.describe()}: refs(unc).p not found in {root / config.name} or {root}")


def split_matches(ref_split: str, split: str) -> bool:
    """The refer toolkit's split selection: "test" takes testA/testB/..., others match exactly."""
    return split in ref_split if split == "test" else ref_split == split


def _xywh_to_xyxy(box) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


class ReferDataset(TaskDataset):
    """Referring expressions: which region does the sentence describe (V-logit)."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        self.use_gt = split == config.train_split
        super().__init__(config, split, tokenizer, use_gt_store=self.use_gt)
        from vilbert.safe_pickle import safe_load

        folder = refer_folder(config)
        refs_path, instances_path = folder / "refs(unc).p", folder / "instances.json"
        config.require(instances_path, "instances.json")
        try:
            refs = safe_load(refs_path)
            instances = json.loads(instances_path.read_text())
            self.entries = self._read(refs, instances, split, refs_path, instances_path)
        except (ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:  # incl. refused pickles
            raise TaskConfigError(f"{config.describe()}: {exc}") from None
        if not self.entries:
            raise TaskConfigError(f"{config.describe()}: no refs of split {split!r} in {refs_path}")
        self.num_labels = 1

        key = cache_key([refs_path], tokenizer, self.max_seq_length, reader="refer", split=split)
        sentences = [e["sentence"] for e in self.entries]
        self.text = cached_arrays(self.cache_dir, f"refer_{config.name}_{split}", key,
                                  lambda: encode_text(tokenizer, sentences, max_length=self.max_seq_length))

    @staticmethod
    def _read(refs, instances, split, refs_path, instances_path) -> list[dict]:
        if not isinstance(refs, list):
            raise ValueError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
        boxes = {a["id"]: a["bbox"] for a in instances.get("annotations", [])}
        entries = []
        for ref in refs:
            for field in ("ref_id", "ann_id", "image_id", "split", "sentences"):
                if field not in ref:
                    raise ValueError(f"{refs_path}: ref {ref.get('ref_id', '?')} has no field {field!r}")
            if not split_matches(ref["split"], split):
                continue
            if ref["ann_id"] not in boxes:
                raise ValueError(f"{instances_path}: no annotation {ref['ann_id']} (box of ref {ref['ref_id']})")
            ref_box = _xywh_to_xyxy(boxes[ref["ann_id"]])
            for sentence in ref["sentences"]:
                text = sentence.get("raw") or sentence.get("sent")
                if text is None:
                    raise ValueError(f"{refs_path}: ref {ref['ref_id']} has a sentence without 'sent' or 'raw'")
                entries.append({"ref_id": ref["ref_id"], "sent_id": sentence.get("sent_id", -1),
                                "image_id": ref["image_id"], "ref_box": ref_box, "sentence": text})
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        padded = self.regions(entry["image_id"], with_gt=self.use_gt)
        ref_box = np.asarray(entry["ref_box"], dtype=np.float32)
        iou = box_iou(torch.from_numpy(padded.boxes), torch.from_numpy(ref_box)).numpy()  # (R,)
        iou = iou * padded.mask
        if self.use_gt:
            iou[iou < TRAIN_IOU_THRESHOLD] = 0.0
        sample = {key: self.text[key][index] for key in TEXT_KEYS}
        sample.update(region_arrays(padded))
        sample.update(
            index=index, target=iou.astype(np.float32), region_boxes=padded.boxes.astype(np.float32),
            ref_box=ref_box, ref_id=int(entry["ref_id"]), sent_id=int(entry["sent_id"]),
        )
        return sample
