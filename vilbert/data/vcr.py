"""VCR (Visual Commonsense Reasoning) in its official jsonl files (REFERENCE 4).

One JSON object per line with (among others) `img_id` ("val-12"), `annot_id` ("val-0"),
`objects` (class names of the image's annotated objects), `question`, `answer_choices` (4),
`rationale_choices` (4), `answer_label`, `rationale_label` (absent on test). Texts are token lists
mixing words and object references (lists of indices into `objects`), e.g.
["Why", "is", [0], "smiling", "?"].

Inputs (4 options per item, flattened to (B*4, T) by the collate):
    Q->A   [CLS] question [SEP] answer_i [SEP]
    QA->R  [CLS] question right-answer [SEP] rationale_i [SEP]
On the test split there is no right answer, so QA->R has one item per answer choice (as the
originals), each marked with its `answer_index`.

An object reference becomes the object's class name; a "person" becomes a first name from a fixed
list of gender-neutral names, one name per person, the same for that annotation in every text
(and in both tasks). Several objects in one reference are joined with "and".

Regions: the ground-truth boxes (features_h5path2, the annotated objects) first, then the
detections (features_h5path1), merged by pad_regions(gt_item=...). Both stores are keyed by the
originals' numeric id: train-N -> N, val-N -> N + 1000000, test-N -> N + 2000000.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import numpy as np

from vilbert.data.cache import cache_key, cached_arrays
from vilbert.data.collate import TEXT_KEYS, TaskDataset, encode_text, region_arrays
from vilbert.data.files import read_jsonl
from vilbert.tasks.config import TaskConfig, TaskConfigError

NUM_OPTIONS = 4
_SPLIT_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}

# Gender-neutral first names that stand in for "person" objects (the originals draw from a table
# of unisex US names; any fixed list of such names does the job).
NEUTRAL_NAMES = (
    "Casey", "Riley", "Jessie", "Jackie", "Avery", "Jaime", "Peyton", "Kerry", "Jody", "Kendall",
    "Skyler", "Frankie", "Pat", "Quinn", "Morgan", "Finley", "Harley", "Robin", "Sidney", "Jordan",
    "Taylor", "Alex", "Charlie", "Emerson", "Reese", "Rowan", "Sage", "Dakota", "Hayden", "Jamie",
    "Kai", "Parker", "Remy", "Shawn", "Tatum", "Blair",
)


def vcr_image_id(img_id: str) -> int:
    """The originals' numeric feature key of a VCR image: "val-12" -> 1000012."""
    split, _, number = str(img_id).rpartition("-")
    if split not in _SPLIT_OFFSETS or not number.isdigit():
        raise ValueError(f"img_id {img_id!r} is not of the form train-N, val-N or test-N")
    return int(number) + _SPLIT_OFFSETS[split]


def object_names(annot_id: str, objects: list[str]) -> list[str]:
    """The word each object stands for: its class name, or a neutral first name for a person.

    Names are drawn without repeats (while the list lasts) by a generator seeded with the
    annotation id, so an annotation reads the same in every run, split and task.
    """
    rng = random.Random(zlib.crc32(str(annot_id).encode()))
    names = list(NEUTRAL_NAMES)
    rng.shuffle(names)
    out, next_name = [], 0
    for name in objects:
        if name == "person":
            out.append(names[next_name % len(names)])
            next_name += 1
        else:
            out.append(name)
    return out


def render(tokens: list, names: list[str], where: str) -> str:
    """A VCR token list as text: words kept, object references replaced by their names."""
    words = []
    for token in tokens:
        if isinstance(token, str):
            words.append(token)
            continue
        if not isinstance(token, list) or not all(isinstance(i, int) and 0 <= i < len(names) for i in token):
            raise ValueError(f"{where}: bad object reference {token!r} ({len(names)} objects)")
        words.append(" and ".join(names[i] for i in token))
    return " ".join(words)


class VCRDataset(TaskDataset):
    """VCR Q->A (mode "q2a") or QA->R (mode "qa2r"): 4 options per item, target = right option."""

    def __init__(self, config: TaskConfig, split: str, tokenizer, *, mode: str):
        if mode not in ("q2a", "qa2r"):
            raise ValueError(f"VCR mode must be 'q2a' or 'qa2r', got {mode!r}")
        super().__init__(config, split, tokenizer, use_gt_store=True)
        self.mode = mode
        self.metric_name = mode
        path = self.annotation_file(split, Path(config.dataroot) / f"{split}.jsonl")
        try:
            records = read_jsonl(path)
            self._read(records, path)
        except (ValueError, KeyError) as exc:
            raise TaskConfigError(f"{config.describe()}: {exc}") from None

        key = cache_key([path], tokenizer, self.max_seq_length, reader="vcr", mode=mode, split=split,
                        names=NEUTRAL_NAMES)
        self.text = cached_arrays(self.cache_dir, f"vcr_{mode}_{split}", key, self._encode)

    def _read(self, records: list[dict], path: Path) -> None:
        required = ["img_id", "annot_id", "objects", "question", "answer_choices"]
        if self.mode == "qa2r":
            required.append("rationale_choices")
        self.has_labels = bool(records) and "answer_label" in records[0]
        if self.has_labels:
            required += ["answer_label"] + (["rationale_label"] if self.mode == "qa2r" else [])
        self.annot_ids, self.image_ids, self.labels, self.firsts, self.options = [], [], [], [], []
        answer_indices = []
        for record in records:
            where = f"{path}:{record['_line']}"
            for field in required:
                if field not in record:
                    raise ValueError(f"{where}: missing field {field!r}")
            names = object_names(record["annot_id"], record["objects"])
            question = render(record["question"], names, where)
            answers = [render(a, names, where) for a in record["answer_choices"]]
            if len(answers) != NUM_OPTIONS:
                raise ValueError(f"{where}: expected {NUM_OPTIONS} answer_choices, got {len(answers)}")
            if self.mode == "q2a":
                contexts = [(question, answers, record.get("answer_label", 0), None)]
            else:
                rationales = [render(r, names, where) for r in record["rationale_choices"]]
                if len(rationales) != NUM_OPTIONS:
                    raise ValueError(f"{where}: expected {NUM_OPTIONS} rationale_choices, got {len(rationales)}")
                if self.has_labels:  # QA->R is asked given the right answer
                    right = record["answer_label"]
                    contexts = [(f"{question} {answers[right]}", rationales, record["rationale_label"], None)]
                else:  # test: one item per answer choice
                    contexts = [(f"{question} {a}", rationales, 0, i) for i, a in enumerate(answers)]
            image_id = vcr_image_id(record["img_id"])
            for first, options, label, answer_index in contexts:
                self.annot_ids.append(str(record["annot_id"]))
                self.image_ids.append(image_id)
                self.firsts.append(first)
                self.options.append(options)
                self.labels.append(int(label))
                answer_indices.append(answer_index)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.answer_indices = None if self.has_labels or self.mode == "q2a" else np.asarray(answer_indices)
        self.num_labels = 1

    def _encode(self) -> dict[str, np.ndarray]:
        # Every (context, option) pair in one call, then back to (items, 4, T).
        firsts = [first for first in self.firsts for _ in range(NUM_OPTIONS)]
        seconds = [option for options in self.options for option in options]
        arrays = encode_text(self.tokenizer, firsts, seconds, max_length=self.max_seq_length)
        return {k: v.reshape(len(self.firsts), NUM_OPTIONS, self.max_seq_length) for k, v in arrays.items()}

    def __len__(self) -> int:
        return len(self.firsts)

    def __getitem__(self, index: int) -> dict:
        sample = {key: self.text[key][index] for key in TEXT_KEYS}  # (4, T) each
        sample.update(region_arrays(self.regions(self.image_ids[index], with_gt=True)))  # (R, ...)
        sample["index"] = index
        sample["target"] = self.labels[index]
        number = self.annot_ids[index].rpartition("-")[2]
        sample["annot_id"] = int(number) if number.isdigit() else -1  # "val-17" -> 17, for writers
        return sample
