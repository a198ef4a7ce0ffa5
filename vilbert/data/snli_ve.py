"""SNLI-VE (visual entailment) in the official files: does the image entail the hypothesis?

    dataroot/snli_ve_{train,dev,test}.jsonl   one SNLI record per line; the fields read:
        Flikr30kID   "<Flickr30k image id>.jpg" (the official spelling), the premise image
        sentence2    the hypothesis
        gold_label   "entailment" | "neutral" | "contradiction" ("-" = no gold label)
        pairID       written back with each prediction

Images are Flickr30k's: the store is keyed by the integer Flickr30k id. Labels are 12-in-1's
indices (contradiction 0, neutral 1, entailment 2), read by the 3-way head `vil_tri_prediction`.
A record without a gold label stays in the split with an all-zero target, as 12-in-1 keeps it.
Results: [{"pairID", "prediction": label name}].
"""

from __future__ import annotations

from pathlib import Path

from vilbert.data.files import read_jsonl
from vilbert.data.labels import LabelDataset
from vilbert.tasks.config import TaskConfig

LABELS = ("contradiction", "neutral", "entailment")  # 12-in-1's label indices


def image_id_of(record: dict) -> int:
    """Flickr30k id of a record: "1234567.jpg" -> 1234567."""
    return int(str(record["Flikr30kID"]).split(".")[0])


class SNLIVEDataset(LabelDataset):
    """SNLI-VE hypotheses on Flickr30k images with 3-way entailment labels."""

    num_labels = len(LABELS)

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        dataroot = config.require(config.dataroot, "dataroot")
        path = self.annotation_file(split, Path(dataroot) / f"snli_ve_{split}.jsonl")
        try:
            records = read_jsonl(path)
            self.image_ids = [image_id_of(r) for r in records]
            self.texts = [str(r["sentence2"]) for r in records]
            gold = [str(r["gold_label"]) for r in records]
        except (KeyError, ValueError) as exc:
            raise self.fail(f"{path}: {exc!r}") from None
        unknown = sorted(set(gold) - set(LABELS) - {"-"})
        if unknown:
            raise self.fail(f"{path}: gold_label {unknown[0]!r} is not one of {', '.join(LABELS)} or '-'")
        self.labels = [LABELS.index(g) if g in LABELS else -1 for g in gold]
        self.pair_ids = [r.get("pairID", str(k)) for k, r in enumerate(records)]
        self._encode("snli_ve", [path])

    def result_record(self, index: int, label: int) -> dict:
        return {"pairID": self.pair_ids[index], "prediction": LABELS[label]}
