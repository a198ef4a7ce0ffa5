"""VQA v2 in the official files (REFERENCE 4).

    dataroot/v2_OpenEnded_mscoco_{train,val}2014_questions.json   {"questions": [{question_id, image_id, question}]}
    dataroot/v2_mscoco_{train,val}2014_annotations.json           {"annotations": [{question_id, image_id,
                                                                    multiple_choice_answer, answers: [10 x {answer}]}]}
    dataroot/v2_OpenEnded_mscoco_test2015_questions.json          test-std + test-dev questions
    dataroot/v2_OpenEnded_mscoco_test-dev2015_questions.json      test-dev questions only
    (a test file named test2014 is read as well)

Splits, as the originals: train, val, test, test-dev; minval = the last 3000 val questions in
question-id order; trainval = train + val minus minval.

The answer vocabulary is `dataroot/cache/<train_split>_label2ans.json` (a JSON list, index =
label). When it is missing it is built from the training split's annotations (normalised
`multiple_choice_answer`s given for at least 9 questions, most frequent first: 3129 answers on the
real train+val) and saved there, so every split and every run shares it.

Item: input_ids/token_type_ids/attention_mask (T,), image arrays (R, ...), index, question_id, and
target (num_labels,) float32 soft scores (not on test splits).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from vilbert.data.collate import TEXT_KEYS, TaskDataset, region_arrays
from vilbert.tasks.config import TaskConfig, TaskConfigError
from vilbert.tasks.metrics import answer_score, normalize_answer

MINVAL_SIZE = 3000  # val questions held out of trainval, as the originals
MIN_ANSWER_COUNT = 9  # an answer joins the vocabulary when given for this many training questions
SPLITS = ("train", "val", "trainval", "minval", "test", "test-dev")

_QUESTION_FILES = {
    "train": ["v2_OpenEnded_mscoco_train2014_questions.json"],
    "val": ["v2_OpenEnded_mscoco_val2014_questions.json"],
    "test": ["v2_OpenEnded_mscoco_test2015_questions.json", "v2_OpenEnded_mscoco_test2014_questions.json"],
    "test-dev": ["v2_OpenEnded_mscoco_test-dev2015_questions.json"],
}
_ANNOTATION_FILES = {
    "train": "v2_mscoco_train2014_annotations.json",
    "val": "v2_mscoco_val2014_annotations.json",
}


def _read_json(path: Path, key: str) -> list:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f"{path}: expected a JSON object with a list under {key!r}")
    return data[key]


def question_file(dataroot: Path, part: str) -> Path:
    """The official question file of train / val / test / test-dev under dataroot."""
    for name in _QUESTION_FILES[part]:
        if (Path(dataroot) / name).is_file():
            return Path(dataroot) / name
    raise FileNotFoundError(f"VQA questions of {part!r} not found: {Path(dataroot) / _QUESTION_FILES[part][0]}")


def _read_part(dataroot: Path, part: str, with_answers: bool) -> tuple[list[dict], list[Path]]:
    """Questions of one official file (sorted by question id), with their annotations if asked."""
    qpath = question_file(dataroot, part)
    questions = sorted(_read_json(qpath, "questions"), key=lambda q: q["question_id"])
    files = [qpath]
    if with_answers:
        apath = Path(dataroot) / _ANNOTATION_FILES[part]
        if not apath.is_file():
            raise FileNotFoundError(f"VQA annotations of {part!r} not found: {apath}")
        annotations = {a["question_id"]: a for a in _read_json(apath, "annotations")}
        files.append(apath)
        for q in questions:
            annotation = annotations.get(q["question_id"])
            if annotation is None:
                raise ValueError(f"{apath}: no annotation for question_id {q['question_id']}")
            if annotation["image_id"] != q["image_id"]:
                raise ValueError(f"{apath}: question_id {q['question_id']} has image_id {annotation['image_id']} "
                                 f"but {qpath} says {q['image_id']}")
            q["annotation"] = annotation
    return questions, files


def load_split(dataroot: Path, split: str) -> tuple[list[dict], list[Path]]:
    """Questions of a split (with an "annotation" each unless a test split) and the files read."""
    if split not in SPLITS:
        raise ValueError(f"VQA split {split!r} is not one of {', '.join(SPLITS)}")
    if split in ("test", "test-dev"):
        return _read_part(dataroot, split, with_answers=False)
    if split in ("train", "val"):
        return _read_part(dataroot, split, with_answers=True)
    val, val_files = _read_part(dataroot, "val", with_answers=True)
    if split == "minval":
        return val[-MINVAL_SIZE:], val_files
    train, train_files = _read_part(dataroot, "train", with_answers=True)
    return train + val[:-MINVAL_SIZE], train_files + val_files  # trainval


def build_answer_vocab(questions: list[dict], min_count: int = MIN_ANSWER_COUNT) -> list[str]:
    """Normalised `multiple_choice_answer`s of at least `min_count` questions, most frequent first."""
    counts = Counter(normalize_answer(q["annotation"]["multiple_choice_answer"]) for q in questions)
    kept = [a for a, n in counts.items() if n >= min_count and a != ""]
    return sorted(kept, key=lambda a: (-counts[a], a))


def soft_target(annotation: dict, ans2label: dict[str, int]) -> tuple[list[int], list[float]]:
    """(labels, scores) of one question: each vocabulary answer the annotators gave, its soft score."""
    counts = Counter(normalize_answer(a["answer"]) for a in annotation["answers"])
    labels = [ans2label[a] for a in counts if a in ans2label]
    scores = [answer_score(counts[a]) for a in counts if a in ans2label]
    return labels, scores


def check_label2ans(label2ans, path: Path) -> list[str]:
    """An answer vocabulary (label -> answer) as read from `path`: a list of strings, or ValueError."""
    if not isinstance(label2ans, list) or not all(isinstance(a, str) for a in label2ans):
        raise ValueError(f"{path}: expected a list of answer strings")
    return label2ans


def read_label2ans(path: Path) -> list[str]:
    """The answer vocabulary saved at `path` (a JSON list, index = label)."""
    return check_label2ans(json.loads(Path(path).read_text()), path)


def write_label2ans(path: Path, label2ans: list[str]) -> None:
    """Save an answer vocabulary as a JSON list, atomically: ranks may race to build it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(label2ans, f)
    os.replace(tmp, path)


def load_or_build_vocab(config: TaskConfig, min_count: int = MIN_ANSWER_COUNT) -> list[str]:
    """The task's answer vocabulary (label -> answer), read from or written to dataroot/cache."""
    path = Path(config.dataroot) / "cache" / f"{config.train_split}_label2ans.json"
    if path.is_file():
        return read_label2ans(path)
    questions, _ = load_split(Path(config.dataroot), config.train_split)
    label2ans = build_answer_vocab(questions, min_count)
    if not label2ans:
        raise ValueError(
            f"no answer is the multiple_choice_answer of {min_count} questions of split {config.train_split!r}; "
            f"give the vocabulary yourself as a JSON list of answers in {path}"
        )
    write_label2ans(path, label2ans)
    return label2ans


class VQADataset(TaskDataset):
    """VQA v2 questions with soft answer targets over the answer vocabulary."""

    def __init__(self, config: TaskConfig, split: str, tokenizer, *, min_answer_count: int = MIN_ANSWER_COUNT):
        super().__init__(config, split, tokenizer)
        dataroot = config.require(config.dataroot, "dataroot")
        try:
            self.label2ans = load_or_build_vocab(config, min_answer_count)
            questions, files = load_split(dataroot, split)
        except (FileNotFoundError, ValueError) as exc:
            raise TaskConfigError(f"{config.describe()}: {exc}") from None
        self.ans2label = {a: i for i, a in enumerate(self.label2ans)}
        self.num_labels = len(self.label2ans)
        self.has_labels = split not in ("test", "test-dev")
        self.question_ids = np.array([q["question_id"] for q in questions], dtype=np.int64)
        self.image_ids = [q["image_id"] for q in questions]
        self.questions = [q["question"] for q in questions]
        self.targets = [soft_target(q["annotation"], self.ans2label) for q in questions] if self.has_labels else None
        self.answers = [[a["answer"] for a in q["annotation"]["answers"]] for q in questions] if self.has_labels else None

        # Only the question files decide the tokens (and the split which of their questions).
        question_files = [f for f in files if f.name.endswith("_questions.json")]
        self.text = self.encode_cached("vqa", question_files, self.questions)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict:
        sample = {key: self.text[key][index] for key in TEXT_KEYS}
        sample.update(region_arrays(self.regions(self.image_ids[index])))
        sample["index"] = index
        sample["question_id"] = self.question_ids[index]
        if self.has_labels:
            target = np.zeros(self.num_labels, dtype=np.float32)
            labels, scores = self.targets[index]
            target[labels] = scores
            sample["target"] = target
        return sample
