"""Visual Dialog (VisDial v1.0 json): 12-in-1's text layout with the dialog history, training items
of 10 rounds x 4 options, evaluation over every one of each round's 100 options, one-line errors."""

import json

import numpy as np
import pytest
import torch

from _taskdata_helpers import load_test_tokenizer, train_step_and_evaluate
from _taskdata_twelve_b import build_one_task, visdial_world
from vilbert.data.collate import collate
from vilbert.data.visdial import dialog_text
from vilbert.tasks.config import TaskConfigError


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def _task(tmp_path):
    return build_one_task(tmp_path, "TASK3", name="VisualDialog", type="VL-logit", loss="CrossEntropyLoss",
                          dataroot="visdial", features_h5path1="visdial/coco.lmdb", batch_size=2, eval_batch_size=100)


def _decode(tokenizer, ids, types=None):
    words = tokenizer.convert_ids_to_tokens([int(i) for i in ids if i != 0])
    return " ".join(words).replace(" ##", "")


def test_dialog_text_cuts_the_history_from_its_front():
    ids, types = dialog_text([5, 6], [7], [1, 2, 3, 4], cls=101, sep=102, length=10)
    assert ids == [101, 5, 6, 102, 7, 102, 2, 3, 4, 102]  # room for 10 - 4 - 3 = 3 history tokens
    ids, types = dialog_text([5, 6], [7], [1, 2, 3, 4], cls=101, sep=102, length=9)
    assert ids == [101, 5, 6, 102, 7, 102, 3, 4, 102] and types == [0, 0, 0, 0, 1, 1, 0, 0, 0]
    ids, _ = dialog_text([5, 6, 8, 9], [7], [1, 2], cls=101, sep=102, length=7)  # no room for history
    assert ids == [101, 5, 6, 102, 7, 102, 102]


def test_a_training_item_is_a_dialog_of_ten_rounds_with_four_options(tmp_path, tokenizer):
    visdial_world(tmp_path)
    task = _task(tmp_path)
    train = task.dataset("train", tokenizer)
    assert len(train) == 2
    item = train[0]
    assert item["input_ids"].shape == (40, 50) and item["target"].tolist() == [0] * 10
    # Round 5 (r = 4) of dialog 0: its question, option 0 = the right answer (options are answer
    # (r + k) % 120, the right one k = 3r), then the 3 previous rounds and the caption.
    row = 4 * 4
    text = _decode(tokenizer, item["input_ids"][row])
    history = " [SEP] ".join(f"is it thing {r} [SEP] reply {r + 3 * r}" for r in (1, 2, 3))
    assert text == f"[CLS] is it thing 4 [SEP] reply 16 [SEP] {history} [SEP] a picture of scene 1 [SEP]"
    length = int(item["attention_mask"][row].sum())  # [CLS] is it thing 4 [SEP] | reply 16 [SEP] | history
    assert item["token_type_ids"][row][:length].tolist() == [0] * 6 + [1] * 3 + [0] * (length - 9)
    first_round = "[CLS] is it thing 0 [SEP] reply 0 [SEP] a picture of scene 1 [SEP]"  # the caption alone
    assert _decode(tokenizer, item["input_ids"][0]) == first_round
    # The other 3 options of each round: distinct answers other than the right one.
    for r in range(10):
        answers = [_decode(tokenizer, item["input_ids"][4 * r + k]).split("[SEP]")[1].strip() for k in range(4)]
        assert answers[0] == f"reply {4 * r}" and len(set(answers)) == 4

    batch = collate([train[0], train[1]])
    assert batch["input_ids"].shape == (80, 50) and batch["image_feat"].shape == (80, 6, 8)
    assert batch["target"].shape == (2, 10)


def test_evaluation_scores_every_option_of_every_round(tmp_path, tokenizer):
    visdial_world(tmp_path)
    task = _task(tmp_path)
    val = task.dataset("val", tokenizer)
    assert len(val) == 6 * 100 and val.has_labels
    item = val[1 * 100 + 7]  # round 2 of dialog 2 (image 3), option 7 = answer (2 + 1 + 7) % 120
    assert _decode(tokenizer, item["input_ids"]).startswith("[CLS] is it thing 21 [SEP] reply 10 [SEP] is it thing 20")
    assert val.round_key(1) == (3, 2) and val.has_relevance.tolist() == [False, True, False, True, False, False]
    np.testing.assert_array_equal(np.nonzero(val.relevance[1])[0], [0, 1, 50])

    test = task.dataset("test", tokenizer)  # only the last round has options, no right answer
    assert len(test) == 100 and test.round_key(0) == (5, 3) and not test.has_labels
    assert _decode(tokenizer, test[0]["input_ids"]).startswith(
        "[CLS] is it thing 42 [SEP] reply 6 [SEP] is it thing 40")
    evaluator = task.evaluator(test)  # no metrics without answers, the submission all the same
    evaluator.update(torch.arange(100.0)[:, None], {"index": torch.arange(100)})
    assert evaluator.compute() == {}
    assert evaluator.results() == [{"image_id": 5, "round_id": 3, "ranks": list(range(100, 0, -1))}]


def test_bad_files_are_one_line_errors(tmp_path, tokenizer):
    dataroot = visdial_world(tmp_path)
    task = _task(tmp_path)
    path = dataroot / "visdial_1.0_train.json"
    data = json.loads(path.read_text())
    data["data"]["dialogs"][1]["dialog"].pop()
    path.write_text(json.dumps(data))
    with pytest.raises(TaskConfigError, match=r"dialog 1 \(image 2\) has 9 rounds"):
        task.dataset("train", tokenizer)
    data["data"]["dialogs"][0]["dialog"][3]["answer_options"].pop()
    path.write_text(json.dumps(data))
    with pytest.raises(TaskConfigError, match=r"train.json: dialog 0 \(image 1\), round 4: 99 answer_options"):
        task.dataset("train", tokenizer)
    dense = dataroot / "visdial_1.0_val_dense_annotations.json"
    dense.write_text(json.dumps([{"image_id": 3, "round_id": 9, "gt_relevance": [0.0] * 100}]))
    with pytest.raises(TaskConfigError, match="image 3 round 9 is not a round"):
        task.dataset("val", tokenizer)


def test_visdial_trains_one_step_and_evaluates(tmp_path, tokenizer):
    visdial_world(tmp_path, val_rounds=1)
    done = train_step_and_evaluate(_task(tmp_path), tokenizer)
    assert torch.isfinite(done["out"].loss)
    assert set(done["metrics"]) == {"MRR", "R@1", "R@5", "R@10", "mean_rank", "NDCG"}
    assert [len(r["ranks"]) for r in done["results"]] == [100, 100]
