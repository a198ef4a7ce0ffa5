import json

import numpy as np
import pytest
import torch

from _taskdata_helpers import load_test_tokenizer, task_entry, vqa_world, write_tasks
from vilbert.data import vqa as vqa_module
from vilbert.data.collate import collate
from vilbert.data.vqa import VQADataset
from vilbert.tasks.config import TaskConfigError, load_task_configs


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


def _config(tmp_path, **fields):
    write_tasks(tmp_path / "tasks.yml", {"TASK1": task_entry(**fields)})
    return load_task_configs(tmp_path / "tasks.yml")[1]


def test_vqa_soft_targets_vocabulary_and_items(tmp_path, tokenizer):
    # Question 100: "two" x2 and "2" x1 normalise to one answer given 3 times (0.9); "3" x7 -> 1.
    vqa_world(tmp_path, {100: ["two", "two", "2", "3", "3", "3", "3", "3", "3", "3"]})
    config = _config(tmp_path)
    train = VQADataset(config, "train", tokenizer, min_answer_count=2)

    # Vocabulary: normalised multiple-choice answers of >= 2 train questions, saved as JSON.
    vocab_file = tmp_path / "vqa" / "cache" / "train_label2ans.json"
    assert json.loads(vocab_file.read_text()) == train.label2ans
    assert set(train.label2ans) == {"red", "blue", "green"}  # "3" is the top answer of one question only
    assert train.question_ids.tolist() == list(range(100, 112))  # sorted by question id

    item = train[0]
    assert item["question_id"] == 100
    assert item["target"].sum() == 0  # neither "2" nor "3" is in the vocabulary
    red = train[3]["target"]  # question 103: ten "red"
    assert red[train.ans2label["red"]] == 1.0 and red.sum() == 1.0

    vocab_file.write_text(json.dumps(["2", "3", "red"]))  # a given vocabulary is used as it is
    given = VQADataset(config, "train", tokenizer)
    target = given[0]["target"]
    np.testing.assert_allclose(target, [0.9, 1.0, 0.0])

    ids = item["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids.shape == (12,)
    assert tokenizer.decode(ids[item["attention_mask"] == 1], skip_special_tokens=True) == "what colour is object 0?"
    assert item["image_feat"].shape == (6, 8) and item["image_attention_mask"].tolist() == [1, 1, 1, 1, 1, 0]

    batch = collate([given[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 12) and batch["input_ids"].dtype == torch.long
    assert batch["image_feat"].shape == (3, 6, 8) and batch["target"].shape == (3, 3)
    assert batch["index"].tolist() == [0, 1, 2]


def test_vqa_splits_as_the_originals(tmp_path, tokenizer, monkeypatch):
    vqa_world(tmp_path)
    monkeypatch.setattr(vqa_module, "MINVAL_SIZE", 2)
    config = _config(tmp_path, train_split="trainval", val_split="minval")
    trainval = VQADataset(config, "trainval", tokenizer, min_answer_count=2)
    minval = VQADataset(config, "minval", tokenizer)
    assert trainval.question_ids.tolist() == list(range(100, 112)) + [200, 201, 202, 203]
    assert minval.question_ids.tolist() == [204, 205]
    assert (tmp_path / "vqa" / "cache" / "trainval_label2ans.json").is_file()

    test = VQADataset(config, "test", tokenizer)  # test2015 questions, no annotations
    assert test.question_ids.tolist() == [300, 301] and "target" not in test[0]
    with pytest.raises(TaskConfigError, match="VQA split 'testdev'"):
        VQADataset(config, "testdev", tokenizer)


def test_vqa_token_cache_is_keyed_by_content(tmp_path, tokenizer, minilm_dir):
    dataroot = vqa_world(tmp_path)
    config = _config(tmp_path)
    VQADataset(config, "val", tokenizer, min_answer_count=2)
    caches = sorted((dataroot / "cache").glob("vqa_val_*.npz"))
    assert len(caches) == 1
    with np.load(caches[0], allow_pickle=False) as data:  # plain integer arrays, no pickle
        assert data["input_ids"].shape == (6, 12)

    # The cached arrays are what is read back (poison them to prove it) ...
    arrays = dict(np.load(caches[0]))
    arrays["input_ids"][:, 1] = 999
    np.savez(caches[0], **arrays)
    assert VQADataset(config, "val", tokenizer)[0]["input_ids"][1] == 999
    # ... and an edited question file gets a new cache.
    qfile = dataroot / "v2_OpenEnded_mscoco_val2014_questions.json"
    qfile.write_text(qfile.read_text().replace("object", "thing"))
    fresh = VQADataset(config, "val", tokenizer)
    assert fresh[0]["input_ids"][1] != 999
    assert len(list((dataroot / "cache").glob("vqa_val_*.npz"))) == 2
    # So does another tokenizer setting (same vocabulary, no lower-casing), and another length.
    from vilbert.tokenization import load_tokenizer

    VQADataset(config, "val", load_tokenizer(minilm_dir, do_lower_case=False))
    VQADataset(_config(tmp_path, max_seq_length=10), "val", tokenizer)
    assert len(list((dataroot / "cache").glob("vqa_val_*.npz"))) == 4


def test_vqa_missing_files_are_named(tmp_path, tokenizer):
    dataroot = vqa_world(tmp_path)
    config = _config(tmp_path)
    with pytest.raises(TaskConfigError, match=r"TASK1 \(VQA\) in .*: no answer is the multiple_choice_answer of 9 "
                       r"questions of split 'train'; give the vocabulary yourself .*train_label2ans.json"):
        VQADataset(config, "train", tokenizer)  # 12 questions: nothing reaches the originals' 9
    (dataroot / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(TaskConfigError, match=r"TASK1 \(VQA\).*v2_mscoco_val2014_annotations.json"):
        VQADataset(config, "val", tokenizer, min_answer_count=2)
    with pytest.raises(TaskConfigError, match="features_h5path1 not found: .*nowhere.lmdb"):
        VQADataset(_config(tmp_path, features_h5path1="nowhere.lmdb"), "train", tokenizer)
