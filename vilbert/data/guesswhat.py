"""GuessWhat?! in its official files: 12-in-1's oracle task (GuessWhat) and guesser task
(GuessWhatPointing).

    dataroot/guesswhat.{train,valid,test}.jsonl.gz   one game per line (the official names; an
                                                      unzipped `.jsonl`, as 12-in-1 reads, is read too)
        id          the game id
        image       {"id": COCO image id, "width", "height", ...}
        objects     [{"id", "category", "bbox": [x, y, width, height] pixels, ...}] the game's objects
        object_id   the object the oracle had in mind
        qas         [{"id", "question", "answer": "Yes" | "No" | "N/A"}]

GuessWhat (VL-tri-classifier): one item per question, the question and the image alone (12-in-1
gives the model neither the target object nor the dialog so far); labels are 12-in-1's indices
Yes 0, No 1, N/A 2, read by the 3-way head. Results: [{"question_id", "answer"}].

GuessWhatPointing (V-logit-mc): one item per game, the whole dialog as one text,
"start <question> answer <answer> stop " per question as 12-in-1 writes it, cut to max_seq_length;
the candidates are the game's objects, the answer its object_id (vilbert.data.pointing explains the
regions: the ground-truth store, keyed by image id, holds the boxes of every object of the image's
games, in the order of their object ids). Results: [{"game_id", "object_id"}], the object picked.
Features of both tasks: the COCO store, keyed by image id.
"""

from __future__ import annotations

from pathlib import Path

from vilbert.data.files import field_error, read_jsonl
from vilbert.data.labels import LabelDataset
from vilbert.data.pointing import PointingDataset, PointingEntry, candidate_positions, xywh_to_xyxy
from vilbert.tasks.config import TaskConfig

LABELS = ("Yes", "No", "N/A")  # 12-in-1's label indices


def games_file(dataroot: Path, split: str) -> Path:
    """guesswhat.<split>.jsonl.gz, or the unzipped guesswhat.<split>.jsonl when only that exists."""
    zipped, plain = dataroot / f"guesswhat.{split}.jsonl.gz", dataroot / f"guesswhat.{split}.jsonl"
    return plain if plain.is_file() and not zipped.is_file() else zipped


def read_games(dataset, split: str, reader) -> Path:
    """Read the split's games, calling reader(game) on each; errors name the file and the line."""
    dataroot = dataset.config.require(dataset.config.dataroot, "dataroot")
    path = dataset.annotation_file(split, games_file(Path(dataroot), split))
    game = {}
    try:
        for game in read_jsonl(path):
            reader(game)
    except (KeyError, TypeError, ValueError) as exc:
        where = f"{path}:{game['_line']}" if "_line" in game else str(path)
        raise dataset.fail(f"{where}: {field_error(exc)}") from None
    return path


class GuessWhatDataset(LabelDataset):
    """GuessWhat?! questions with Yes / No / N/A answers (the oracle's task, as 12-in-1 poses it)."""

    num_labels = len(LABELS)

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        self.texts, self.image_ids, self.question_ids, answers = [], [], [], []

        def read(game: dict) -> None:
            for qa in game["qas"]:
                self.texts.append(str(qa["question"]))
                self.image_ids.append(game["image"]["id"])
                self.question_ids.append(qa["id"])
                answers.append(qa.get("answer"))

        path = read_games(self, split, read)
        self.has_labels = all(a is not None for a in answers)
        unknown = sorted({str(a) for a in answers if a is not None} - set(LABELS))
        if unknown:
            raise self.fail(f"{path}: answer {unknown[0]!r} is not one of {', '.join(LABELS)}")
        self.labels = [LABELS.index(a) if a is not None else -1 for a in answers]
        self._encode("guesswhat", [path])

    def result_record(self, index: int, label: int) -> dict:
        return {"question_id": self.question_ids[index], "answer": LABELS[label]}


class GuessWhatPointingDataset(PointingDataset):
    """GuessWhat?! games: pick the oracle's object among the game's objects after its dialog."""

    def __init__(self, config: TaskConfig, split: str, tokenizer):
        super().__init__(config, split, tokenizer)
        games = []

        def read(game: dict) -> None:
            boxes = {o["id"]: xywh_to_xyxy(o["bbox"]) for o in game["objects"]}
            if game["object_id"] not in boxes:
                raise ValueError(f"object_id {game['object_id']} is not one of the game's objects")
            text = "".join(f"start {qa['question']} answer {qa['answer']} stop " for qa in game["qas"])
            games.append((game["id"], game["image"]["id"], boxes, game["object_id"], text))

        path = read_games(self, split, read)
        image_objects: dict = {}  # image id -> the object ids of its games (the ground-truth store's rows)
        for _, image_id, boxes, _, _ in games:
            image_objects.setdefault(image_id, []).extend(boxes)
        self.entries, self.texts, self.game_ids, self.object_ids = [], [], [], []
        for game_id, image_id, boxes, object_id, text in games:
            ids = sorted(boxes)
            self.entries.append(PointingEntry(image_id, candidate_positions(ids, image_objects[image_id]),
                                              [boxes[i] for i in ids], ids.index(object_id)))
            self.texts.append(text)
            self.game_ids.append(game_id)
            self.object_ids.append(ids)
        self._encode("guesswhat_pointing", [path])

    def result_record(self, index: int, candidate: int) -> dict:
        return {"game_id": self.game_ids[index], "object_id": self.object_ids[index][candidate]}
