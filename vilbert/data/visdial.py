"""Visual Dialog (VisDial v1.0) in its official json files: rank each round's 100 candidate answers.

    dataroot/visdial_1.0_{train,val,test}.json   (or the entry's train/val annotation paths)
        {"version", "split", "data": {"questions": [str], "answers": [str], "dialogs": [
            {"image_id", "caption", "dialog": [{"question": index into questions,
              "answer": index into answers, "answer_options": [100 indices into answers],
              "gt_index": position of the answer among the options}, ...]}]}}
        On test, each dialog's last round has only question and answer_options.
    <annotation file stem>_dense_annotations.json beside the file, e.g.
    visdial_1.0_val_dense_annotations.json: [{"image_id", "round_id" (1-based),
        "gt_relevance": [100 floats]}] for one round per image ("relevance" is read too); for NDCG.

The text of a (round, answer option) pair, as 12-in-1 writes it:
    [CLS] question [SEP] answer option [SEP] history [SEP]        token types 0, 1, 0
history = the round's 3 previous rounds, "question [SEP] answer" joined by [SEP], then [SEP]
caption (the caption alone in round 1), cut from its front so that the whole is at most 50 tokens:
12-in-1's `_total_seq_length`, which its entry's max_seq_length (16) does not change, and neither
does it here. Features: the COCO store, keyed by image id.

Training (VisDialTrainDataset): one item per dialog, as 12-in-1: each of its 10 rounds with 4
options, the right answer first and 3 other options drawn at random each time the item is read;
text (10 * 4, T), flattened by the collate (the image repeated per row) in round-major order,
target (10,) all 0. So batch_size counts dialogs, as 12-in-1's does: its 64 are 640 rounds and 2560
rows per optimizer step; reach them with --gradient_accumulation_steps where memory is short.
Evaluation (VisDialEvalDataset): every (round, option) pair of the rounds that have options, scored
one row at a time: item k is round k // 100, option k % 100. VisDialEvaluator ranks each round's
100 options as the official evaluation (R@1/5/10, MRR and mean rank of the right answer where the
round has one, NDCG where it has dense annotations). Results: the EvalAI submission format,
[{"image_id", "round_id", "ranks": [the rank of each of the 100 options]}]. 12-in-1 validated on
its training items instead (4 sampled options, accuracy), which is not comparable with published
VisDial figures; ranking all options costs 25 times as many rows (train_tasks --val_subset N scores
the first N pairs, N / 100 rounds, during training).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional

import numpy as np

from vilbert.data.cache import cache_key, cached_arrays
from vilbert.data.collate import TEXT_KEYS, TaskDataset, region_arrays
from vilbert.data.files import field_error
from vilbert.tasks.config import TaskConfig

NUM_OPTIONS = 100  # answer options of every round (VisDial v1.0)
NUM_ROUNDS = 10  # rounds of a dialog, all in one training item (12-in-1)
TRAIN_OPTIONS = 4  # options of a training round: the answer and 3 others at random (12-in-1)
HISTORY_ROUNDS = 3  # previous rounds in the text (12-in-1's max_round_num)
SEQ_LENGTH = 50  # tokens of a (round, option) text (12-in-1's _total_seq_length)


def dense_annotations_file(annotations: Path) -> Path:
    """visdial_1.0_val.json -> visdial_1.0_val_dense_annotations.json (the official names)."""
    return annotations.with_name(f"{annotations.stem}_dense_annotations.json")


def ragged_token_ids(tokenizer, texts: list[str], chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Word-piece ids of each text without special tokens: (flat ids int32, offsets (N+1,) int64)."""
    pieces = []
    for start in range(0, len(texts), chunk_size):
        pieces.extend(tokenizer(list(texts[start:start + chunk_size]), add_special_tokens=False)["input_ids"])
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    flat = np.fromiter((t for p in pieces for t in p), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def dialog_text(question: list[int], answer: list[int], history: list[int], cls: int, sep: int,
                length: int = SEQ_LENGTH) -> tuple[list[int], list[int]]:
    """(ids, token types) of [CLS] question [SEP] answer [SEP] history [SEP], at most `length` long.

    The history loses tokens from its front (12-in-1); when question and answer alone are too long,
    the longer of them loses tokens from its end (12-in-1 fails there; no VisDial text is that long).
    """
    budget = length - 4
    question, answer = list(question), list(answer)
    while len(question) + len(answer) > budget:
        (question if len(question) > len(answer) else answer).pop()
    keep = budget - len(question) - len(answer)
    history = list(history[max(0, len(history) - keep):]) if keep > 0 else []
    ids = [cls, *question, sep, *answer, sep, *history, sep]
    types = [0] * (len(question) + 2) + [1] * (len(answer) + 1) + [0] * (len(history) + 1)
    return ids, types


class _VisDialBase(TaskDataset):
    """A split's dialogs as a table of rounds (numpy arrays, one row per round, dialogs in file
    order) and its questions, answers and captions as word pieces."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        self.num_labels = 1
        dataroot = config.require(config.dataroot, "dataroot")
        self.path = self.annotation_file(split, Path(dataroot) / f"visdial_1.0_{split}.json")
        try:
            data = json.loads(self.path.read_text())["data"]
            texts = {"question": [str(q) for q in data["questions"]], "answer": [str(a) for a in data["answers"]]}
            self._read_dialogs(data["dialogs"], len(texts["question"]), len(texts["answer"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(f"{self.path}: {field_error(exc)}") from None
        texts["caption"] = self.captions

        def tokenize() -> dict[str, np.ndarray]:
            arrays = {}
            for kind, values in texts.items():
                arrays[f"{kind}_ids"], arrays[f"{kind}_offsets"] = ragged_token_ids(tokenizer, values)
            return arrays

        key = cache_key([self.path], tokenizer, SEQ_LENGTH, reader="visdial", split=split)
        self.tokens = cached_arrays(self.cache_dir, f"visdial_{split}", key, tokenize)
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def _read_dialogs(self, dialogs: list, num_questions: int, num_answers: int) -> None:
        self.image_ids, self.captions, starts = [], [], [0]
        rounds = {"dialog": [], "number": [], "question": [], "answer": [], "gt": []}
        options = []
        for d, dialog in enumerate(dialogs):
            self.image_ids.append(dialog["image_id"])
            self.captions.append(str(dialog["caption"]))
            for r, entry in enumerate(dialog["dialog"]):
                where = f"dialog {d} (image {dialog['image_id']}), round {r + 1}"
                row_options = entry.get("answer_options")
                if row_options is not None and len(row_options) != NUM_OPTIONS:
                    raise ValueError(f"{where}: {len(row_options)} answer_options, expected {NUM_OPTIONS}")
                if "gt_index" in entry and not 0 <= entry["gt_index"] < NUM_OPTIONS:
                    raise ValueError(f"{where}: gt_index {entry['gt_index']} is not an option")
                rounds["dialog"].append(d)
                rounds["number"].append(r)
                rounds["question"].append(entry["question"])
                rounds["answer"].append(entry.get("answer", -1))
                rounds["gt"].append(entry.get("gt_index", -1) if row_options is not None else -1)
                options.append(row_options if row_options is not None else [-1] * NUM_OPTIONS)
            starts.append(len(rounds["dialog"]))
        self.rounds = {name: np.asarray(values, dtype=np.int64) for name, values in rounds.items()}
        self.options = np.asarray(options, dtype=np.int32).reshape(-1, NUM_OPTIONS)  # (rounds, 100), -1 = none
        self.dialog_starts = np.asarray(starts, dtype=np.int64)  # (dialogs + 1,)
        self.has_options = self.options[:, 0] >= 0
        for name, values, lowest, limit in (("question", self.rounds["question"], 0, num_questions),
                                            ("answer", self.rounds["answer"], -1, num_answers),  # -1: none
                                            ("answer_options", self.options, -1, num_answers)):
            bad = np.nonzero(((values < lowest) | (values >= limit)).reshape(len(values), -1).any(axis=1))[0]
            if len(bad):
                row = int(bad[0])
                raise ValueError(f"dialog {self.rounds['dialog'][row]}, round {self.rounds['number'][row] + 1}: "
                                 f"{name} index out of range (the file has {limit})")

    def _piece(self, kind: str, index: int) -> np.ndarray:
        offsets = self.tokens[f"{kind}_offsets"]
        return self.tokens[f"{kind}_ids"][offsets[index]:offsets[index + 1]]

    def context(self, row: int) -> tuple[np.ndarray, list[int]]:
        """The question of a round and its history (previous rounds, then the caption)."""
        number = int(self.rounds["number"][row])
        history: list[int] = []
        for previous in range(row - min(number, HISTORY_ROUNDS), row):
            if history:
                history.append(self.sep)
            history += [*self._piece("question", self.rounds["question"][previous]), self.sep,
                        *self._piece("answer", self.rounds["answer"][previous])]
        caption = list(self._piece("caption", self.rounds["dialog"][row]))
        history = history + [self.sep] + caption if history else caption
        return self._piece("question", self.rounds["question"][row]), history

    def round_texts(self, row: int, options) -> dict[str, np.ndarray]:
        """input_ids, token_type_ids, attention_mask (len(options), SEQ_LENGTH) int32 of a round
        with each of the given option positions."""
        question, history = self.context(row)
        out = {key: np.zeros((len(options), SEQ_LENGTH), dtype=np.int32) for key in TEXT_KEYS}
        for k, option in enumerate(options):
            ids, types = dialog_text(question, self._piece("answer", self.options[row, option]), history,
                                     self.cls, self.sep)
            out["input_ids"][k, :len(ids)] = ids
            out["token_type_ids"][k, :len(ids)] = types
            out["attention_mask"][k, :len(ids)] = 1
        return out


class VisDialTrainDataset(_VisDialBase):
    """One item per dialog: its 10 rounds x 4 options (see the module docstring)."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        counts = np.diff(self.dialog_starts)
        short = np.nonzero(counts != NUM_ROUNDS)[0]
        if len(short):
            d = short[0]
            raise self.fail(f"{self.path}: dialog {d} (image {self.image_ids[d]}) has {counts[d]} rounds; "
                            f"a training item holds {NUM_ROUNDS}, as 12-in-1")
        unanswered = np.nonzero(self.rounds["gt"] < 0)[0]
        if len(unanswered):
            row = unanswered[0]
            raise self.fail(f"{self.path}: dialog {self.rounds['dialog'][row]}, round {self.rounds['number'][row] + 1} "
                            "has no answer_options or gt_index to train on")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict:
        # `random` is seeded per DataLoader worker by torch (and by train_tasks in the main process).
        rounds = []
        for row in range(self.dialog_starts[index], self.dialog_starts[index + 1]):
            gt = int(self.rounds["gt"][row])
            others = [o + (o >= gt) for o in random.sample(range(NUM_OPTIONS - 1), TRAIN_OPTIONS - 1)]
            rounds.append(self.round_texts(row, [gt, *others]))
        sample = {key: np.concatenate([r[key] for r in rounds]) for key in rounds[0]}  # (10 * 4, T)
        sample.update(region_arrays(self.regions(self.image_ids[index])))
        sample["target"] = np.zeros(NUM_ROUNDS, dtype=np.int64)  # the answer is each round's option 0
        sample["index"] = index
        return sample


class VisDialEvalDataset(_VisDialBase):
    """Every (round, option) pair of the rounds with answer options; round m's options are items
    m * 100 ... m * 100 + 99.

    round_rows (M,): the rounds' rows in the round table; gt_index (M,): the right option, -1 where
    unknown; relevance (M, 100) float32 and has_relevance (M,): the dense annotations (rounds without
    any relevant option are left out of NDCG, whose official code divides by zero there).
    """

    def __init__(self, config: TaskConfig, split: str, tokenizer, dense_annotations: Optional[Path] = None):
        super().__init__(config, split, tokenizer)
        self.round_rows = np.nonzero(self.has_options)[0]
        if not len(self.round_rows):
            raise self.fail(f"{self.path}: no round has answer_options")
        self.gt_index = self.rounds["gt"][self.round_rows]
        self.has_labels = bool((self.gt_index >= 0).any())
        self.relevance = np.zeros((len(self.round_rows), NUM_OPTIONS), dtype=np.float32)
        self.has_relevance = np.zeros(len(self.round_rows), dtype=bool)
        dense = Path(dense_annotations) if dense_annotations else dense_annotations_file(self.path)
        if dense.is_file():
            self._read_dense(dense)
        self._last_image = (None, None)  # consecutive items share an image: keep the last one read

    def round_key(self, m: int) -> tuple:
        """(image id, round id 1-based) of evaluation round m."""
        row = self.round_rows[m]
        return self.image_ids[self.rounds["dialog"][row]], int(self.rounds["number"][row]) + 1

    def _read_dense(self, path: Path) -> None:
        position = {self.round_key(m): m for m in range(len(self.round_rows))}
        try:
            for record in json.loads(path.read_text()):
                key = (record["image_id"], int(record["round_id"]))
                relevance = record["gt_relevance"] if "gt_relevance" in record else record["relevance"]
                if key not in position:
                    raise ValueError(f"image {key[0]} round {key[1]} is not a round of {self.path.name} with options")
                if len(relevance) != NUM_OPTIONS:
                    raise ValueError(f"image {key[0]} round {key[1]}: {len(relevance)} relevances, "
                                     f"expected {NUM_OPTIONS}")
                self.relevance[position[key]] = relevance
                self.has_relevance[position[key]] = any(value != 0 for value in relevance)
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(f"{path}: {field_error(exc)}") from None

    def __len__(self) -> int:
        return len(self.round_rows) * NUM_OPTIONS

    def __getitem__(self, index: int) -> dict:
        m, option = divmod(index, NUM_OPTIONS)
        row = int(self.round_rows[m])
        sample = {key: value[0] for key, value in self.round_texts(row, [option]).items()}  # (T,)
        image_id = self.image_ids[self.rounds["dialog"][row]]
        if self._last_image[0] != image_id:
            self._last_image = (image_id, region_arrays(self.regions(image_id)))
        sample.update(self._last_image[1])
        sample["index"] = index
        return sample
