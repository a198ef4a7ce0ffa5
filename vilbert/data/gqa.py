"""GQA in the official balanced question files.

    dataroot/{train,val,testdev}_balanced_questions.json   {question id: {imageId, question, answer, ...}}
                                                            (testdev answers are not read)

Splits, as 12-in-1: train, val; trainval = train + val in question-id order minus its last 3000
questions, which are minval; test (or testdev) = the test-dev balanced questions. The store is keyed
by GQA's `imageId`.

Answers: 12-in-1 classifies over 1533 answers (its head `vil_prediction_gqa`), read from the
`cache/trainval_label2ans.pkl` it distributes; its repository does not build that file. Here the
vocabulary is `dataroot/cache/trainval_label2ans.json` (a JSON list, index = label); when missing,
12-in-1's pickle is read in its place (with vilbert.safe_pickle); when neither exists it is built
from the train + val answers, most frequent first, and saved as the JSON file. The head has 1533
outputs whatever the vocabulary's size (a smaller one leaves outputs unused; a larger one is an
error). Target: one-hot at the question's answer (zero when it is not in the vocabulary), so the
score at the top label is GQA's exact-match accuracy. Results: [{"questionId", "prediction"}], the
official submission format.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from vilbert.data.labels import LabelDataset
from vilbert.data.vqa import check_label2ans, read_label2ans, write_label2ans
from vilbert.tasks.config import TaskConfig

NUM_ANSWERS = 1533  # outputs of 12-in-1's GQA head (vilbert.model.GQA_NUM_LABELS)
MINVAL_SIZE = 3000  # the last trainval questions held out as minval, as 12-in-1
SPLITS = ("train", "val", "trainval", "minval", "test", "testdev")


def question_order(qid: str):
    """GQA question ids are digit strings ("05451384"); sort by their number, as 12-in-1 does."""
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)


def read_questions(dataroot: Path, part: str) -> tuple[list[tuple[str, dict]], Path]:
    """(question id, record) of one official file, in question-id order, and the file."""
    path = dataroot / f"{part}_balanced_questions.json"
    if not path.is_file():
        raise FileNotFoundError(f"GQA questions of {part!r} not found: {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{question id: question}}")
    return sorted(((str(q), r) for q, r in data.items()), key=lambda item: question_order(item[0])), path


def load_split(dataroot: Path, split: str) -> tuple[list[tuple[str, dict]], list[Path]]:
    if split not in SPLITS:
        raise ValueError(f"GQA split {split!r} is not one of {', '.join(SPLITS)}")
    if split in ("test", "testdev"):
        questions, path = read_questions(dataroot, "testdev")
        return questions, [path]
    if split in ("train", "val"):
        questions, path = read_questions(dataroot, split)
        return questions, [path]
    train, train_path = read_questions(dataroot, "train")
    val, val_path = read_questions(dataroot, "val")
    both = sorted(train + val, key=lambda item: question_order(item[0]))
    return (both[-MINVAL_SIZE:] if split == "minval" else both[:-MINVAL_SIZE]), [train_path, val_path]


def build_answer_vocab(dataroot: Path) -> list[str]:
    """Every answer of the train + val questions, most frequent first (ties alphabetically)."""
    questions, _ = load_split(dataroot, "train")
    val, _ = load_split(dataroot, "val")
    counts = Counter(str(record["answer"]) for _, record in questions + val)
    return sorted(counts, key=lambda a: (-counts[a], a))


def load_or_build_vocab(dataroot: Path) -> list[str]:
    cache = dataroot / "cache"
    path, original = cache / "trainval_label2ans.json", cache / "trainval_label2ans.pkl"
    if path.is_file():
        label2ans = read_label2ans(path)
    elif original.is_file():
        from vilbert.safe_pickle import safe_load

        label2ans = check_label2ans(safe_load(original), original)
    else:
        label2ans = build_answer_vocab(dataroot)
        write_label2ans(path, label2ans)
    if len(label2ans) > NUM_ANSWERS:
        raise ValueError(f"GQA answer vocabulary has {len(label2ans)} answers; the GQA head has {NUM_ANSWERS}")
    return label2ans


class GQADataset(LabelDataset):
    """GQA balanced questions, one answer each, over 12-in-1's 1533-way GQA head."""

    num_labels = NUM_ANSWERS

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        dataroot = Path(config.require(config.dataroot, "dataroot"))
        try:
            self.label2ans = load_or_build_vocab(dataroot)
            questions, files = load_split(dataroot, split)
            self.question_ids = [qid for qid, _ in questions]
            self.image_ids = [str(record["imageId"]) for _, record in questions]
            self.texts = [str(record["question"]) for _, record in questions]
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise self.fail(repr(exc) if isinstance(exc, KeyError) else str(exc)) from None
        ans2label = {a: i for i, a in enumerate(self.label2ans)}
        self.has_labels = split not in ("test", "testdev")
        self.labels = [ans2label.get(str(r.get("answer")), -1) for _, r in questions] if self.has_labels \
            else [-1] * len(questions)
        self._encode("gqa", files)

    def result_record(self, index: int, label: int) -> dict:
        answer = self.label2ans[label] if label < len(self.label2ans) else ""
        return {"questionId": self.question_ids[index], "prediction": answer}
