"""NLVR2 in the official files: is the sentence true of the pair of images?

    dataroot/{train,dev,test1}.json   JSON lines (the official names; `.jsonl` is read too); fields:
        identifier   "<split>-<set>-<pair>-<sentence>", e.g. "dev-850-0-1"
        sentence     the statement
        label        "True" | "False" (absent on an unlabelled split)

The two images are named as the original derives them from the identifier: its last part
replaced by "img0" and "img1" ("dev-850-0-1" -> "dev-850-0-img0", "dev-850-0-img1"); the store is
keyed by those names. Each example is two rows, the sentence with each image; the binary head
`vil_binary_prediction` reads the two rows' fused vectors concatenated (img0 first), as 12-in-1.
Labels: False 0, True 1. Results: [{"identifier", "prediction": "True" | "False"}].
"""

from __future__ import annotations

from pathlib import Path

from vilbert.data.files import read_jsonl
from vilbert.data.labels import LabelDataset
from vilbert.tasks.config import TaskConfig

LABELS = ("False", "True")


def pair_image_ids(identifier: str) -> tuple[str, str]:
    """The two image names of an example: "dev-850-0-1" -> ("dev-850-0-img0", "dev-850-0-img1")."""
    stem = "-".join(identifier.split("-")[:-1])
    return f"{stem}-img0", f"{stem}-img1"


def annotation_path(dataroot: Path, split: str) -> Path:
    for suffix in (".json", ".jsonl"):
        if (dataroot / f"{split}{suffix}").is_file():
            return dataroot / f"{split}{suffix}"
    return dataroot / f"{split}.json"


class NLVR2Dataset(LabelDataset):
    """NLVR2 statements on image pairs with True/False labels."""

    num_labels = len(LABELS)

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        dataroot = config.require(config.dataroot, "dataroot")
        path = self.annotation_file(split, annotation_path(Path(dataroot), split))
        try:
            records = read_jsonl(path)
            self.identifiers = [str(r["identifier"]) for r in records]
            self.texts = [str(r["sentence"]) for r in records]
        except (KeyError, ValueError) as exc:
            raise self.fail(f"{path}: {exc!r}") from None
        self.image_ids = [pair_image_ids(i) for i in self.identifiers]
        self.has_labels = all("label" in r for r in records)
        labels = [str(r.get("label")) for r in records] if self.has_labels else []
        bad = sorted(set(labels) - set(LABELS))
        if bad:
            raise self.fail(f"{path}: label {bad[0]!r} is not True or False")
        self.labels = [LABELS.index(label) for label in labels] or [-1] * len(records)
        self._encode("nlvr2", [path])

    def result_record(self, index: int, label: int) -> dict:
        return {"identifier": self.identifiers[index], "prediction": LABELS[label]}
