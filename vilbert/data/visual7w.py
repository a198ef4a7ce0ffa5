"""Visual7W pointing in its official file: which of four boxes answers the "which" question?

    dataroot/dataset_v7w_pointing.json
        boxes    [{"box_id", "x", "y", "width", "height", "name"}]          (pixels)
        images   [{"image_id", "split": "train" | "val" | "test", "filename",
                   "qa_pairs": [{"qa_id", "question", "answer": box_id,
                                 "multiple_choices": [3 box_ids], "type"}]}]

One item per question; the split is the images' `split` field. Its 4 candidates are the answer and
the 3 multiple choices, in the order of their box ids (vilbert.data.pointing explains the regions):
both stores are keyed "v7w_<image_id>" as 12-in-1's, the ground-truth store holding every box any
question of the image names, in the order of their box ids. Text: [CLS] question [SEP].
Results: the Visual7W toolkit's format, [{"qa_id", "question", "candidates": [{"answer": box_id}]}].
"""

from __future__ import annotations

import json
from pathlib import Path

from vilbert.data.files import field_error
from vilbert.data.pointing import PointingDataset, PointingEntry, candidate_positions, xywh_to_xyxy
from vilbert.tasks.config import TaskConfig

ANNOTATION_FILE = "dataset_v7w_pointing.json"


def feature_key(image_id) -> str:
    """The feature-store key of a Visual7W image, as 12-in-1's stores: 123 -> "v7w_123"."""
    return f"v7w_{image_id}"


class Visual7wPointingDataset(PointingDataset):
    """Visual7W pointing questions of one split, 4 candidate boxes each."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        dataroot = config.require(config.dataroot, "dataroot")
        path = self.annotation_file(split, Path(dataroot) / ANNOTATION_FILE)
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise self.fail(f"{path}: not valid JSON ({exc})") from None
        self.entries, self.texts, self.qa_ids, self.box_ids = [], [], [], []
        image = None
        try:
            boxes = {b["box_id"]: xywh_to_xyxy([b["x"], b["y"], b["width"], b["height"]]) for b in data["boxes"]}
            for image in data["images"]:
                if image["split"] == split:
                    self._read_image(image, boxes)
        except (KeyError, TypeError, ValueError) as exc:
            where = f", image {image.get('image_id', '?')}" if isinstance(image, dict) else ""
            raise self.fail(f"{path}{where}: {field_error(exc)}") from None
        self._encode("visual7w", [path])

    def _read_image(self, image: dict, boxes: dict) -> None:
        qa_pairs = image["qa_pairs"]
        image_box_ids = [b for qa in qa_pairs for b in [qa["answer"], *qa["multiple_choices"]]]
        for qa in qa_pairs:
            candidate_ids = sorted([qa["answer"], *qa["multiple_choices"]])
            self.entries.append(PointingEntry(
                image_id=feature_key(image["image_id"]),
                candidates=candidate_positions(candidate_ids, image_box_ids),
                candidate_boxes=[boxes[b] for b in candidate_ids],
                answer=candidate_ids.index(qa["answer"]),
            ))
            self.texts.append(str(qa["question"]))
            self.qa_ids.append(qa["qa_id"])
            self.box_ids.append(candidate_ids)

    def result_record(self, index: int, candidate: int) -> dict:
        return {"qa_id": self.qa_ids[index], "question": self.texts[index],
                "candidates": [{"answer": self.box_ids[index][candidate]}]}
