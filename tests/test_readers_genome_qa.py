"""GenomeQA (12-in-1's Visual Genome QA, VL-classifier): 12-in-1's cached targets and the official
question_answers.json, its val split, the vocabulary, soft accuracy and result records."""

import pickle

import pytest
import torch

from _taskdata_twelve_a import GENOME_ANSWERS, build_one_task, genome_world
from vilbert.data import genome_qa
from vilbert.tasks.config import TaskConfigError


@pytest.fixture(autouse=True)
def small_val(monkeypatch):
    monkeypatch.setattr(genome_qa, "VAL_SIZE", 3)


def _task(tmp_path):
    return build_one_task(tmp_path, 2, name="GenomeQA", dataroot="visual_genome",
                          features_h5path1="visual_genome/vg.lmdb")


def test_twelve_in_ones_targets_split_by_question_id(tmp_path, tokenizer):
    genome_world(tmp_path)
    task = _task(tmp_path)
    assert (task.head, task.reader.name) == ("vil_prediction", "genome_qa")
    train, val = task.dataset("train", tokenizer), task.dataset("val", tokenizer)
    assert train.question_ids.tolist() == [10, 11, 12, 13, 14] and val.question_ids.tolist() == [15, 16, 17]
    assert train.label2ans == GENOME_ANSWERS and train.num_labels == 4
    item = train[1]  # question 11: answer "2" (label 3) at 1.0, "yes" at 0.3; image 1 + 11 % 3 = 3
    assert item["target"].tolist() == pytest.approx([0.3, 0, 0, 1.0])
    assert item["image_attention_mask"].sum() == 6 + 1 - 1  # 6 boxes + global, max_region_num 6
    assert tokenizer.decode(item["input_ids"][item["attention_mask"] == 1], skip_special_tokens=True) == \
        "what is thing 11?"

    # Soft accuracy: the target at the top answer; results are VQA's submission records.
    evaluator = task.evaluator(val)
    targets = torch.stack([torch.from_numpy(val[i]["target"]) for i in range(3)])
    logits = torch.tensor([[0.0, 0, 0, 5], [0.0, 0, 5, 0], [5.0, 0, 0, 0]])  # "2", "red", "yes"
    evaluator.update(logits, {"index": torch.arange(3), "target": targets})
    # 15 (answer "2"): 1.0; 16 (answer "yes"): "red" 0; 17 (answer "no", "yes" at 0.3): 0.3.
    assert evaluator.compute() == {"accuracy": pytest.approx((1.0 + 0 + 0.3) / 3 * 100)}
    assert evaluator.results()[0] == {"question_id": 15, "answer": "2"}


def test_official_question_answers_build_the_vocabulary(tmp_path, tokenizer, monkeypatch):
    genome_world(tmp_path, official=True)
    monkeypatch.setattr(genome_qa, "MIN_ANSWER_COUNT", 2)
    train = _task(tmp_path).dataset("train", tokenizer)
    # Train questions 10..14 answer "Red.", "2.", "Yes.", "No.", "Red.": normalised, "red" is given twice.
    assert train.label2ans == ["red"]
    assert (tmp_path / "visual_genome" / "cache" / "trainval_label2ans.json").is_file()
    assert [train[i]["target"].tolist() for i in range(5)] == [[1.0], [0.0], [0.0], [0.0], [1.0]]


def test_genome_bad_files_are_one_line_errors(tmp_path, tokenizer):
    genome_world(tmp_path)
    cache = tmp_path / "visual_genome" / "cache"
    (cache / "trainval_target.pkl").write_bytes(pickle.dumps([{"question_id": 1, "image_id": 1}]))
    with pytest.raises(TaskConfigError, match=r"TASK2 \(GenomeQA\).*trainval_target.pkl: question 1 has no field "
                                              r"'question'"):
        _task(tmp_path).dataset("train", tokenizer)
    (cache / "trainval_target.pkl").write_bytes(pickle.dumps([{"question_id": 1, "image_id": 1, "question": "q",
                                                                "labels": [9], "scores": [1.0]}] * 4))
    with pytest.raises(TaskConfigError, match=r"question 1: labels \[9\] do not match scores \[1.0\] or the "
                                              r"4-answer vocabulary"):
        _task(tmp_path).dataset("train", tokenizer)
    (cache / "trainval_target.pkl").unlink()
    with pytest.raises(TaskConfigError, match=r"question_answers.json \(or cache/trainval_target.pkl\) not found"):
        _task(tmp_path).dataset("train", tokenizer)
