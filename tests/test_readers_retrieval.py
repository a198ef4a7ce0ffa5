import json
import random

import numpy as np
import pytest

from _taskdata_helpers import flickr_entry, flickr_world, load_test_tokenizer, write_tasks
from vilbert.data import retrieval
from vilbert.data.collate import collate
from vilbert.data.retrieval import RetrievalEvalDataset, RetrievalTrainDataset
from vilbert.tasks.config import TaskConfigError, load_task_configs


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


@pytest.fixture
def config(tmp_path):
    flickr_world(tmp_path)
    write_tasks(tmp_path / "tasks.yml", {"TASK9": flickr_entry()})
    return load_task_configs(tmp_path / "tasks.yml")[9]


def _pool(dataroot, neighbours=2):
    annotations = dataroot / "all_data_final_train_2014.jsonline"
    code = retrieval.main(["pool", "--annotations", str(annotations), "--features", str(dataroot / "flickr.lmdb"),
                           "--output", str(dataroot / "hard_negative.json"), "--neighbours", str(neighbours)])
    assert code == 0
    return json.loads((dataroot / "hard_negative.json").read_text())


def test_hard_negative_pool_is_nearest_by_mean_feature(config):
    pool = _pool(config.dataroot)
    assert pool["num_neighbours"] == 2
    assert pool["neighbours"]["100"] == ["101", "102"]  # features are the constant image id
    assert sorted(pool["neighbours"]["103"]) == ["102", "104"]
    assert all(image_id not in near for image_id, near in pool["neighbours"].items())


def test_training_items_hold_the_four_pairs(config, tokenizer):
    with pytest.raises(TaskConfigError, match="hard negatives not found: .*python -m vilbert.data.retrieval pool"):
        RetrievalTrainDataset(config, "train", tokenizer)
    _pool(config.dataroot, neighbours=1)
    data = RetrievalTrainDataset(config, "train", tokenizer)
    assert len(data) == 12 and data.num_images == 6

    def caption_of(item, option):
        ids = item["input_ids"][option]
        return tokenizer.decode(ids[item["attention_mask"][option] == 1], skip_special_tokens=True)

    random.seed(0)
    for index in (0, 5, 11):
        item = data[index]
        image = 100 + index // 2
        own_captions = {f"picture {image} shows thing {image}", f"image {image} again"}
        region_ids = item["image_feat"][:, 1, 0]  # a region feature = the image id
        assert caption_of(item, 0) in own_captions and caption_of(item, 2) in own_captions
        assert caption_of(item, 1) not in own_captions
        hard_neighbour = 101 if image == 100 else image - 1  # the single nearest image
        assert str(hard_neighbour) in caption_of(item, 3)
        assert region_ids[0] == region_ids[1] == region_ids[3] == image and region_ids[2] != image
        assert item["target"] == 0

    batch = collate([data[0], data[1], data[2]])
    assert batch["input_ids"].shape == (12, 12) and batch["image_feat"].shape == (12, 4, 8)
    assert batch["target"].tolist() == [0, 0, 0]


def test_eval_enumerates_every_pair(config, tokenizer):
    test = RetrievalEvalDataset(config, "test", tokenizer)  # not in the YAML: the default file name
    assert test.num_images == 3 and test.num_captions == 6 and len(test) == 18
    assert test.caption_image_index.tolist() == [0, 0, 1, 1, 2, 2]
    item = test[7]  # image 1 (id 301), caption 1
    assert (item["caption_index"], item["image_index"]) == (1, 1)
    assert item["image_feat"][1, 0] == 301
    batch = collate([test[i] for i in range(6)])
    assert batch["input_ids"].shape == (6, 12) and batch["image_index"].tolist() == [0] * 6

    val = RetrievalEvalDataset(config, "val", tokenizer)  # the YAML's val file
    assert val.image_ids == ["200", "201"]
    with pytest.raises(TaskConfigError, match="no annotation file is known for split 'dev'"):
        RetrievalEvalDataset(config, "dev", tokenizer)


def test_without_images_drops_their_captions_and_negatives(config, tokenizer):
    """12-in-1's --clean_train_sets on retrieval: a removed picture is neither an item nor a negative."""
    _pool(config.dataroot, neighbours=2)
    data = RetrievalTrainDataset(config, "train", tokenizer)
    cleaned = data.without_images(lambda image_id: image_id in ("101", "102"))
    assert len(data) == 12 and data.num_images == 6  # the original is untouched
    assert len(cleaned) == 8 and cleaned.image_ids == ["100", "103", "104", "105"]
    assert cleaned.hard_pool[0] == [1, 2, 3] and cleaned.hard_pool[1] == [2]  # 100's pool [101, 102] was emptied
    random.seed(0)
    for index in range(len(cleaned)):
        item = cleaned[index]
        shown = {int(image) for image in item["image_feat"][:, 1, 0]}  # a region feature = the image id
        assert not shown & {101, 102}, (index, shown)
        texts = tokenizer.batch_decode(item["input_ids"], skip_special_tokens=True)
        assert not any("101" in text or "102" in text for text in texts), (index, texts)
    assert int(cleaned[0]["image_feat"][0, 1, 0]) == 100 and int(cleaned[7]["image_feat"][0, 1, 0]) == 105
    with pytest.raises(TaskConfigError, match="fewer than 2 training images"):
        data.without_images(lambda image_id: image_id != "100")
