"""GuessWhat?! (jsonl.gz): the oracle's Yes / No / N/A questions (VL-tri-classifier) and the
guesser's pointing among the game's objects after its dialog (V-logit-mc)."""

import gzip
import json

import numpy as np
import pytest
import torch

from _taskdata_helpers import load_test_tokenizer, task_entry, train_step_and_evaluate, write_tasks
from _taskdata_twelve_b import guesswhat_world
from vilbert.tasks.config import TaskConfigError, load_task_configs
from vilbert.tasks.registry import build_task


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def _tasks(tmp_path):
    common = dict(dataroot="guesswhat", features_h5path1="guesswhat/coco.lmdb", val_split="valid", batch_size=2)
    write_tasks(tmp_path / "tasks.yml", {
        "TASK14": task_entry(name="GuessWhat", type="VL-tri-classifier", **common),
        "TASK17": task_entry(name="GuessWhatPointing", type="V-logit-mc", features_h5path2="guesswhat/gw_gt.lmdb",
                             max_region_num=10, max_seq_length=40, **common),
    })
    configs = load_task_configs(tmp_path / "tasks.yml")
    return build_task(configs[14]), build_task(configs[17])


def test_the_oracle_task_has_one_item_per_question(tmp_path, tokenizer):
    guesswhat_world(tmp_path)
    oracle, _ = _tasks(tmp_path)
    train = oracle.dataset("train", tokenizer)
    assert train.labels.tolist() == [0, 1, 2, 1, 0, 1]  # Yes 0, No 1, N/A 2
    assert train.image_ids == [21, 21, 22, 21, 21, 21] and train.question_ids == [1, 2, 3, 4, 5, 6]
    item = train[2]
    assert item["target"].tolist() == [0.0, 0.0, 1.0] and item["image_feat"].shape == (6, 8)
    valid = oracle.dataset("valid", tokenizer)
    evaluator = oracle.evaluator(valid)
    evaluator.update(torch.tensor([[2.0, 0, 0], [2.0, 0, 0], [0, 0, 2.0]]),
                     {"index": torch.arange(3), "target": torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]])})
    assert evaluator.compute() == pytest.approx({"accuracy": 100 / 3})
    assert evaluator.results() == [{"question_id": 7, "answer": "Yes"}, {"question_id": 8, "answer": "Yes"},
                                   {"question_id": 9, "answer": "N/A"}]


def test_the_guesser_points_among_the_games_objects_after_its_dialog(tmp_path, tokenizer):
    guesswhat_world(tmp_path)
    _, pointing = _tasks(tmp_path)
    train = pointing.dataset("train", tokenizer)
    assert train.game_ids == [1, 2, 3] and train.max_candidates == 4  # image 22 has 4 objects
    item = train[0]  # image 21, objects 31, 32 (the target), 33; 31 overlaps 32 with IoU 0.8
    assert item["candidate_regions"].tolist() == [1, 2, 3, 0] and item["candidate_mask"].tolist() == [1, 1, 1, 0]
    np.testing.assert_allclose(item["target"], [0.8, 1.0, 0.0, 0.0], rtol=1e-6)
    words = tokenizer.convert_ids_to_tokens([int(i) for i in item["input_ids"] if i])
    assert " ".join(words) == "[CLS] start is it a cat answer yes stop start is it on the left answer no stop [SEP]"
    assert train[1]["candidate_regions"].tolist() == [1, 2, 3, 4]

    valid = pointing.dataset("valid", tokenizer)
    evaluator = pointing.evaluator(valid)
    logits = torch.zeros(2, 10, 1)
    logits[0, 2, 0] = logits[1, 3, 0] = 1.0  # game 4: object 52 (right); game 5: object 43 (41 is right)
    batch = {key: torch.as_tensor(np.stack([valid[i][key] for i in range(2)]))
             for key in ("candidate_regions", "candidate_mask", "target")}
    evaluator.update(logits, {**batch, "index": torch.arange(2)})
    assert evaluator.compute() == pytest.approx({"accuracy": 50.0})
    assert evaluator.results() == [{"game_id": 4, "object_id": 52}, {"game_id": 5, "object_id": 43}]


def test_an_unzipped_file_as_12_in_1_reads_it(tmp_path, tokenizer):
    dataroot = guesswhat_world(tmp_path)
    oracle, _ = _tasks(tmp_path)
    zipped = dataroot / "guesswhat.valid.jsonl.gz"
    (dataroot / "guesswhat.valid.jsonl").write_bytes(gzip.decompress(zipped.read_bytes()))
    zipped.unlink()
    assert oracle.dataset("valid", tokenizer).question_ids == [7, 8, 9]


def test_bad_games_are_one_line_errors(tmp_path, tokenizer):
    dataroot = guesswhat_world(tmp_path)
    oracle, pointing = _tasks(tmp_path)
    path = dataroot / "guesswhat.train.jsonl.gz"
    games = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
    games[1]["qas"][0]["answer"] = "Maybe"
    games[2]["object_id"] = 99
    path.write_bytes(gzip.compress("\n".join(json.dumps(g) for g in games).encode()))
    with pytest.raises(TaskConfigError, match=r"guesswhat.train.jsonl.gz: answer 'Maybe' is not one of Yes, No, N/A"):
        oracle.dataset("train", tokenizer)
    with pytest.raises(TaskConfigError, match=r"guesswhat.train.jsonl.gz:3: object_id 99 is not one of the game's"):
        pointing.dataset("train", tokenizer)
    del games[0]["image"]
    path.write_bytes(gzip.compress("\n".join(json.dumps(g) for g in games).encode()))
    with pytest.raises(TaskConfigError, match=r"guesswhat.train.jsonl.gz:1: missing field 'image'"):
        oracle.dataset("train", tokenizer)


@pytest.mark.parametrize("which", [0, 1])
def test_guesswhat_tasks_train_one_step_and_evaluate(tmp_path, tokenizer, which):
    guesswhat_world(tmp_path)
    task = _tasks(tmp_path)[which]
    done = train_step_and_evaluate(task, tokenizer)
    assert torch.isfinite(done["out"].loss) and set(done["metrics"]) == {"accuracy"}
    assert len(done["results"]) == (3 if which == 0 else 2)
