"""RefCOCO+ (and RefCOCO, RefCOCOg) in the refer-toolkit layout (REFERENCE 4).

    dataroot/<task name>/refs(<split by>).p  a pickle: list of refs {ref_id, ann_id, image_id, split,
                                             sentences: [{sent_id, sent, raw?, tokens}]}
    dataroot/<task name>/instances.json      COCO: images, annotations (bbox = x, y, w, h), categories

The split partition ("split by") is the toolkit's: UNC's (`refs(unc).p`) for RefCOCO and RefCOCO+,
UMD's (`refs(umd).p`) for RefCOCOg, as 12-in-1 (readers "refer" and "refer_umd"). The pickle is read
with vilbert.safe_pickle (plain containers only), never with pickle.load. Splits are the toolkit's:
"train", "val", "testA", "testB" (RefCOCOg umd: "train", "val", "test") select refs of that split;
"test" selects every test split.

One item per sentence. Regions: on the training split the ground-truth boxes (features_h5path2)
come first, then the detections (features_h5path1); on other splits the detections alone, as the
originals, so evaluation grounds into detector boxes. Target (R,): the IoU of each region's box
with the referred box (0 on padding); on the training split values below 0.5 are set to 0.

Item extras: target (R,) float32, region_boxes (R, 4) pixels (row 0 = whole image), ref_box (4,)
pixels x1, y1, x2, y2, ref_id, sent_id, index. GroundingDataset is what every phrase-grounding
reader shares (Flickr30k Entities too, vilbert/data/flickr_grounding.py): entries in, items out.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from vilbert.data.collate import TEXT_KEYS, TaskDataset, region_arrays
from vilbert.tasks.config import TaskConfig, TaskConfigError
from vilbert.tasks.metrics import box_iou

TRAIN_IOU_THRESHOLD = 0.5  # training targets below this IoU are 0 (REFERENCE 4)


def refer_folder(config: TaskConfig, split_by: str = "unc") -> Path:
    """The folder holding refs(<split_by>).p: dataroot/<name>/ as the toolkit, or dataroot itself."""
    root = config.require(config.dataroot, "dataroot")
    name = f"refs({split_by}).p"
    for folder in (root / config.name, root):
        if (folder / name).is_file():
            return folder
    raise TaskConfigError(f"{config.describe()}: {name} not found in {root / config.name} or {root}")


def split_matches(ref_split: str, split: str) -> bool:
    """The refer toolkit's split selection: "test" takes testA/testB/..., others match exactly."""
    return split in ref_split if split == "test" else ref_split == split


def xywh_to_xyxy(box) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


class GroundingDataset(TaskDataset):
    """Phrase grounding (V-logit): which region does the text describe. Subclasses fill `entries`
    (dicts with image_id, ref_box [x1, y1, x2, y2] pixels, sentence, and their own ids), then call
    `_encode`; `item_ids` / `result_ids` say which ids go into a batch and into a result record."""

    entries: list[dict]

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        self.use_gt = split == config.train_split
        super().__init__(config, split, tokenizer, use_gt_store=self.use_gt)
        self.num_labels = 1

    def _encode(self, reader: str, files: list[Path]) -> None:
        if not self.entries:
            raise TaskConfigError(f"{self.config.describe()}: no examples of split {self.split!r} in "
                                  f"{', '.join(str(f) for f in files)}")
        sentences = [e["sentence"] for e in self.entries]
        # Keyed by the texts themselves too: a reader may read more files than it lists (Flickr30k).
        texts = hashlib.sha256("\n".join(sentences).encode()).hexdigest()
        self.text = self.encode_cached(reader, files, sentences, prefix=f"{reader}_{self.config.name}_{self.split}",
                                       texts=texts)

    def item_ids(self, entry: dict) -> dict:
        """Numeric ids of an entry that go into its item (and so into the batch)."""
        return {}

    def result_ids(self, index: int) -> dict:
        """The ids that open an item's result record (ReferEvaluator)."""
        raise NotImplementedError

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
        sample.update(index=index, target=iou.astype(np.float32), region_boxes=padded.boxes.astype(np.float32),
                      ref_box=ref_box, **self.item_ids(entry))
        return sample


class ReferDataset(GroundingDataset):
    """Referring expressions of the refer toolkit (RefCOCO, RefCOCO+ by unc; RefCOCOg by umd)."""

    def __init__(self, config: TaskConfig, split: str, tokenizer, split_by: str = "unc"):
        super().__init__(config, split, tokenizer)
        from vilbert.safe_pickle import safe_load

        folder = refer_folder(config, split_by)
        refs_path, instances_path = folder / f"refs({split_by}).p", folder / "instances.json"
        config.require(instances_path, "instances.json")
        try:
            refs = safe_load(refs_path)
            instances = json.loads(instances_path.read_text())
            self.entries = self._read(refs, instances, split, refs_path, instances_path)
        except (ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:  # incl. refused pickles
            raise TaskConfigError(f"{config.describe()}: {exc}") from None
        self._encode("refer", [refs_path])

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
            ref_box = xywh_to_xyxy(boxes[ref["ann_id"]])
            for sentence in ref["sentences"]:
                text = sentence.get("raw") or sentence.get("sent")
                if text is None:
                    raise ValueError(f"{refs_path}: ref {ref['ref_id']} has a sentence without 'sent' or 'raw'")
                entries.append({"ref_id": ref["ref_id"], "sent_id": sentence.get("sent_id", -1),
                                "image_id": ref["image_id"], "ref_box": ref_box, "sentence": text})
        return entries

    def item_ids(self, entry: dict) -> dict:
        return {"ref_id": int(entry["ref_id"]), "sent_id": int(entry["sent_id"])}

    def result_ids(self, index: int) -> dict:
        entry = self.entries[index]
        return {"ref_id": entry["ref_id"], "sent_id": entry["sent_id"], "image_id": entry["image_id"]}
