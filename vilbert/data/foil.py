"""FOIL-COCO in the official files: is the caption right for the image, or "foiled" (one noun swapped)?

    dataroot/foilv1.0_train_2017.json   {"images": [...], "annotations": [{id, image_id, caption,
    dataroot/foilv1.0_test_2017.json      foil (true = foiled), foil_word, target_word, ...}]}

The training split reads `train_annotations_jsonpath` (or the train file), the val split
`val_annotations_jsonpath` (12-in-1's file names the test file there; FOIL has no val file), any other
split the test file. The store is COCO's, keyed by `image_id`. Labels, as 12-in-1: 0 = correct
caption, 1 = foil. Captions are lower-cased as 12-in-1 does.

Head: 12-in-1 gives Foil the binary head `vil_binary_prediction`, whose input is two fused vectors
side by side (NLVR2's image pair); with Foil's one image per example its batch would have half as
many outputs as labels and its cross-entropy fails on the shapes. Here an example is the caption
with its image twice (two rows, like an NLVR2 pair of the same image), so the head reads one example
per output. The loss is the task's `loss` field (12-in-1's file: CrossEntropyLoss).
Results: [{"id", "image_id", "foil": true | false}].
"""

from __future__ import annotations

import json
from pathlib import Path

from vilbert.data.labels import LabelDataset
from vilbert.tasks.config import TaskConfig

TRAIN_FILE, TEST_FILE = "foilv1.0_train_2017.json", "foilv1.0_test_2017.json"


class FoilDataset(LabelDataset):
    """FOIL-COCO captions with their foil / correct labels."""

    num_labels = 2

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        dataroot = Path(config.require(config.dataroot, "dataroot"))
        path = self.annotation_file(split, dataroot / (TRAIN_FILE if split == config.train_split else TEST_FILE))
        try:
            annotations = json.loads(path.read_text())["annotations"]
            self.annotation_ids = [a.get("id", k) for k, a in enumerate(annotations)]
            self.texts = [str(a["caption"]).lower() for a in annotations]
            self.image_ids = [(a["image_id"], a["image_id"]) for a in annotations]  # the image twice, see above
            foils = [a["foil"] for a in annotations]
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(f"{path}: {exc!r}") from None
        bad = [f for f in foils if not isinstance(f, bool)]
        if bad:
            raise self.fail(f"{path}: 'foil' must be true or false, got {bad[0]!r}")
        self.labels = [int(f) for f in foils]
        self._encode("foil", [path])

    def result_record(self, index: int, label: int) -> dict:
        return {"id": self.annotation_ids[index], "image_id": self.image_ids[index][0], "foil": bool(label)}
