"""Visual Genome question answering (12-in-1's GenomeQA) over VQA's classifier head.

Questions, read from whichever of these dataroot holds (12-in-1's first):
    dataroot/cache/trainval_target.pkl  12-in-1's file: a list of {question_id, image_id, question,
                                        labels: [answer labels], scores: [their soft scores]}
    dataroot/question_answers.json      the official Visual Genome release: [{"id": image id,
                                        "qas": [{qa_id, image_id, question, answer, ...}]}]
Answer vocabulary (label -> answer): dataroot/cache/trainval_label2ans.json (a JSON list), else
12-in-1's cache/trainval_label2ans.pkl; with the official file and neither, it is built from the
training split's normalised answers given for at least 9 questions (as VQA's) and saved as the JSON
file. The official file's answer is normalised as VQA's (the answers end in "."); its target is 1.0
at that answer's label. 12-in-1 trains GenomeQA on VQA's head (`vil_prediction`, 3129 answers), so
the two tasks train together only with vocabularies of one size (its files: VQA's 3129).

Splits, as 12-in-1: every question in question-id order; val = the last 5000, train = the rest.
The store is keyed by the Visual Genome image id. Items, metric (soft accuracy at the top answer)
and results ([{"question_id", "answer"}]) are VQA's. The pickles are read with vilbert.safe_pickle.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np

from vilbert.data.collate import TaskDataset
from vilbert.data.vqa import MIN_ANSWER_COUNT, VQADataset, check_label2ans, read_label2ans, write_label2ans
from vilbert.tasks.config import TaskConfig, TaskConfigError
from vilbert.tasks.metrics import normalize_answer

VAL_SIZE = 5000  # the last questions (by id) held out as val, as 12-in-1
SPLITS = ("train", "val")
_FIELDS = ("question_id", "image_id", "question", "labels", "scores")


def read_targets(path: Path) -> list[dict]:
    """12-in-1's trainval_target.pkl: its records, checked."""
    from vilbert.safe_pickle import safe_load

    records = safe_load(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of questions, got {type(records).__name__}")
    for record in records:
        if not isinstance(record, dict):
            raise ValueError(f"{path}: expected a dict per question, got {record!r}")
        missing = [f for f in _FIELDS if f not in record]
        if missing:
            raise ValueError(f"{path}: question {record.get('question_id', '?')} has no field {missing[0]!r}")
    return [{field: record[field] for field in _FIELDS} for record in records]


def read_question_answers(path: Path) -> list[dict]:
    """The official question_answers.json as records {question_id, image_id, question, answer}."""
    images = json.loads(Path(path).read_text())
    if not isinstance(images, list):
        raise ValueError(f"{path}: expected a list of images with their 'qas'")
    try:
        return [{"question_id": qa["qa_id"], "image_id": qa.get("image_id", image["id"]), "question": qa["question"],
                 "answer": normalize_answer(qa["answer"])} for image in images for qa in image["qas"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: a question lacks {exc}") from None


def split_records(records: list[dict], split: str) -> list[dict]:
    if split not in SPLITS:
        raise ValueError(f"GenomeQA split {split!r} is not one of {', '.join(SPLITS)}")
    ordered = sorted(records, key=lambda r: r["question_id"])
    return ordered[-VAL_SIZE:] if split == "val" else ordered[:-VAL_SIZE]


def load_vocab(cache: Path, records: list[dict]) -> list[str]:
    path, original = cache / "trainval_label2ans.json", cache / "trainval_label2ans.pkl"
    if path.is_file():
        return read_label2ans(path)
    if original.is_file():
        from vilbert.safe_pickle import safe_load

        return check_label2ans(safe_load(original), original)
    if not records or "answer" not in records[0]:
        raise ValueError(f"no answer vocabulary: give {path} (a JSON list) or 12-in-1's {original}")
    counts = Counter(r["answer"] for r in split_records(records, "train"))
    label2ans = sorted((a for a, n in counts.items() if n >= MIN_ANSWER_COUNT and a), key=lambda a: (-counts[a], a))
    if not label2ans:
        raise ValueError(f"no answer is given for {MIN_ANSWER_COUNT} training questions; give the vocabulary in {path}")
    write_label2ans(path, label2ans)
    return label2ans


class GenomeQADataset(VQADataset):
    """Visual Genome questions with answer targets over a VQA-style vocabulary (items as VQA's)."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        TaskDataset.__init__(self, config, split, tokenizer)  # VQADataset's reading is VQA's files
        dataroot = Path(config.require(config.dataroot, "dataroot"))
        targets, official = dataroot / "cache" / "trainval_target.pkl", dataroot / "question_answers.json"
        path = targets if targets.is_file() else config.require(official, "question_answers.json (or cache/"
                                                                          "trainval_target.pkl)")
        try:
            records = read_targets(path) if path == targets else read_question_answers(path)
            self.label2ans = load_vocab(dataroot / "cache", records)
            records = split_records(records, split)
        except (ValueError, pickle.UnpicklingError) as exc:  # incl. refused pickles
            raise TaskConfigError(f"{config.describe()}: {exc}") from None
        self.ans2label = {a: i for i, a in enumerate(self.label2ans)}
        self.num_labels = len(self.label2ans)
        self.has_labels = True
        self.question_ids = np.array([r["question_id"] for r in records], dtype=np.int64)
        self.image_ids = [r["image_id"] for r in records]
        self.questions = [str(r["question"]) for r in records]
        if path == targets:
            self.targets = [(list(r["labels"]), list(r["scores"])) for r in records]
        else:
            self.targets = [([self.ans2label[r["answer"]]], [1.0]) if r["answer"] in self.ans2label else ([], [])
                            for r in records]
        for (labels, scores), qid in zip(self.targets, self.question_ids):
            if len(labels) != len(scores) or any(not 0 <= int(i) < self.num_labels for i in labels):
                raise TaskConfigError(f"{config.describe()}: {path}: question {qid}: labels {labels} do not match "
                                      f"scores {scores} or the {self.num_labels}-answer vocabulary")
        self.text = self.encode_cached("genome_qa", [path], self.questions)
