import dataclasses
import json
from pathlib import Path

import pytest
import torch

from _taskdata_helpers import (
    flickr_entry, flickr_world, load_test_tokenizer, refer_entry, refer_world, task_entry, vcr_entry, vcr_world,
    vqa_world, write_tasks,
)
from vilbert.data.collate import model_inputs
from vilbert.data.retrieval import main as retrieval_main
from vilbert.tasks.config import TaskConfigError
from vilbert.tasks.metrics import joint_metrics
from vilbert.tasks.registry import TASK_TYPES, Task, build_tasks, get_reader, register_reader

REPO = Path(__file__).resolve().parents[1]


def test_task_types_and_loss_scales():
    assert {name: t.head for name, t in TASK_TYPES.items()} == {
        "VL-classifier": "vil_prediction", "VL-logit": "vil_logit", "V-logit": "vision_logit",
        "VL-classifier-GQA": "vil_prediction_gqa", "VL-binary-classifier": "vil_binary_prediction",
        "VL-tri-classifier": "vil_tri_prediction", "V-logit-mc": "vision_logit"}
    tasks = build_tasks("1,6-7,9,11", REPO / "vlbert_tasks.yml")
    assert list(tasks) == [1, 6, 7, 9, 11]
    # lr 4e-5 (VQA, RefCOCO+) vs 2e-5 (VCR, retrieval): scale = lr / smallest lr.
    assert {i: t.loss_scale for i, t in tasks.items()} == {1: 2.0, 6: 1.0, 7: 1.0, 9: 1.0, 11: 2.0}
    assert build_tasks("1", REPO / "vlbert_tasks.yml")[1].loss_scale == 1.0
    assert tasks[6].metrics == ("q2a",) and tasks[9].metrics == ("R@1", "R@5", "R@10")
    assert tasks[1].result_file("out", "test") == Path("out/test_VQA_result.json")
    with pytest.raises(TaskConfigError, match="unknown reader 'nope'"):
        get_reader("nope")


def test_a_new_task_is_a_yaml_entry_plus_a_reader(tmp_path):
    vqa_world(tmp_path)
    # Same format under a new name: only the entry, naming the reader.
    write_tasks(tmp_path / "t.yml", {"TASK20": task_entry(name="MyVQA", reader="vqa"),
                                     "TASK21": task_entry(name="Counting", reader="counting")})
    assert build_tasks("20", tmp_path / "t.yml")[20].reader.name == "vqa"
    with pytest.raises(TaskConfigError, match="unknown reader 'counting'"):
        build_tasks("21", tmp_path / "t.yml")
    # A new format: one reader registered.
    register_reader("counting", train_dataset=lambda config, split, tokenizer: ["item"] * 3,
                    evaluator=lambda dataset: None, metrics=["accuracy"])
    task = build_tasks("21", tmp_path / "t.yml")[21]
    assert task.dataset("train", None) == ["item"] * 3 and task.head == "vil_prediction"


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def _tiny_model(num_labels, max_regions):
    from vilbert.config import ViLBertConfig
    from vilbert.model import ViLBertForVLTasks

    config = ViLBertConfig.from_json_file(REPO / "config" / "vilbert_tiny.json")
    config = dataclasses.replace(config, vocab_size=30522, v_feature_size=8, hidden_dropout_prob=0.0,
                                 v_hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                 v_attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return ViLBertForVLTasks(config, num_labels=num_labels)


def test_every_task_trains_and_evaluates_through_the_registry(tmp_path, tokenizer):
    """Task id -> datasets -> loader -> model -> loss -> evaluator -> metrics + result file, for all five."""
    vqa_world(tmp_path), vcr_world(tmp_path), refer_world(tmp_path)
    (tmp_path / "vqa" / "cache").mkdir()  # a given answer vocabulary (too few questions to build one)
    (tmp_path / "vqa" / "cache" / "train_label2ans.json").write_text(json.dumps(["red", "blue", "green"]))
    flickr = flickr_world(tmp_path)
    retrieval_main(["pool", "--annotations", str(flickr / "all_data_final_train_2014.jsonline"),
                    "--features", str(flickr / "flickr.lmdb"), "--output", str(flickr / "hard_negative.json")])
    write_tasks(tmp_path / "tasks.yml", {
        "TASK1": task_entry(), "TASK6": vcr_entry("VCR_Q-A"), "TASK7": vcr_entry("VCR_QA-R"),
        "TASK9": flickr_entry(), "TASK11": refer_entry(),
    })
    tasks = build_tasks("1,6-7,9,11", tmp_path / "tasks.yml")
    vqa_train = tasks[1].dataset("train", tokenizer)
    model = _tiny_model(vqa_train.num_labels, 8)

    evaluators = {}
    for task_id, task in tasks.items():
        assert isinstance(task, Task)
        train = vqa_train if task_id == 1 else task.dataset(task.config.train_split, tokenizer)
        batch = next(iter(task.loader(train, train=True, batch_size=2)))
        model.train()
        out = model(**model_inputs(batch), heads={task.head})
        loss = task.loss(out, batch) * task.loss_scale
        assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
        loss.backward()
        model.zero_grad()

        model.eval()
        val = task.dataset(task.config.val_split, tokenizer)
        evaluator = task.evaluator(val)
        with torch.no_grad():
            for batch in task.loader(val, train=False, batch_size=3):
                evaluator.update(task.head_output(model(**model_inputs(batch), heads={task.head})), batch)
        metrics = evaluator.compute()
        assert set(metrics) == set(task.metrics), task.name
        assert all(0.0 <= v <= 100.0 for v in metrics.values())
        path = evaluator.write(task.result_file(tmp_path / "results", task.config.val_split))
        assert len(json.loads(path.read_text())) > 0
        evaluators[task.name] = evaluator

    joint = joint_metrics(evaluators)
    assert set(joint) == {"VCR_Q-A", "VCR_QA-R"} and "q2ar" in joint["VCR_Q-A"]
    submission = json.loads((tmp_path / "results" / "val_VQA_result.json").read_text())
    assert set(submission[0]) == {"question_id", "answer"}
