"""Flickr30k Entities phrase grounding (12-in-1's FlickrGrounding): which region does a phrase name.

    dataroot/{train,val,test}.txt       image ids of the split, one per line (the official lists)
    dataroot/Sentences/<image id>.txt   the five captions, one a line, phrases marked in place:
                                        "[/EN#18/people A child] in [/EN#19/clothing a pink dress] ..."
    dataroot/Annotations/<image id>.xml PASCAL-VOC style: <object><name>18</name><bndbox><xmin>..
                                        (1-based pixels) or <nobndbox>/<scene> for phrases without box

One example per marked phrase that has a box, as 12-in-1: the text is the phrase alone, the
referred box the first box of its phrase id, shifted to 0-based pixels (x - 1). Phrases without a
box (scene, not visible, "notvisual" id 0) are skipped. Regions and targets as the refer reader
(GroundingDataset): ground-truth boxes joined to the detections on the training split, IoU targets,
accuracy = IoU of the top region > 0.5 (ReferEvaluator). Result records open with image_id,
sentence (index of the caption in its file), phrase_id and phrase.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from vilbert.data.refer import GroundingDataset
from vilbert.tasks.config import TaskConfig, TaskConfigError

_PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s/\]]+)*)\s+([^\]]*)\]")


def read_sentences(path: Path) -> list[list[dict]]:
    """The phrases of each caption of a Sentences file: [[{phrase_id, phrase, types}, ...], ...]."""
    captions = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            captions.append([{"phrase_id": m.group(1), "types": m.group(2).strip("/").split("/"),
                              "phrase": m.group(3).strip()} for m in _PHRASE.finditer(line)])
    return captions


def read_boxes(path: Path) -> dict[str, list[list[float]]]:
    """{phrase id: [[x1, y1, x2, y2] 0-based pixels, ...]} of an Annotations file (boxed phrases only)."""
    try:
        root = ET.parse(path).getroot()
        boxes: dict[str, list[list[float]]] = {}
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            if box is None:
                continue
            corners = [float(box.findtext(tag)) - 1 for tag in ("xmin", "ymin", "xmax", "ymax")]
            for name in obj.findall("name"):
                boxes.setdefault(name.text.strip(), []).append(corners)
    except (ET.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a Flickr30k Entities annotation ({exc})") from None
    return boxes


class FlickrGroundingDataset(GroundingDataset):
    """Flickr30k Entities phrases grounded in region boxes (V-logit)."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        dataroot = Path(config.require(config.dataroot, "dataroot"))
        ids_path = config.require(dataroot / f"{split}.txt", f"image list of split {split!r}")
        self.entries = []
        try:
            for image in ids_path.read_text().split():
                if not image.isdigit():  # checked before it names a file: an id never leads out of dataroot
                    raise ValueError(f"{ids_path}: image id {image[:40]!r} is not a number")
                boxes = read_boxes(config.require(dataroot / "Annotations" / f"{image}.xml", "annotation"))
                captions = read_sentences(config.require(dataroot / "Sentences" / f"{image}.txt", "sentences"))
                for index, phrases in enumerate(captions):
                    self.entries += [{"image_id": int(image), "sentence_index": index, "phrase_id": p["phrase_id"],
                                      "sentence": p["phrase"], "ref_box": boxes[p["phrase_id"]][0]}
                                     for p in phrases if p["phrase_id"] in boxes]
        except ValueError as exc:  # incl. an image id that is not a number
            raise TaskConfigError(f"{config.describe()}: {exc}") from None
        self._encode("flickr_grounding", [ids_path])

    def result_ids(self, index: int) -> dict:
        entry = self.entries[index]
        return {"image_id": entry["image_id"], "sentence": entry["sentence_index"],
                "phrase_id": entry["phrase_id"], "phrase": entry["sentence"]}
