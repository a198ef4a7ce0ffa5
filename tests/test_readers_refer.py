import pickle

import numpy as np
import pytest

from _taskdata_helpers import load_test_tokenizer, refer_entry, refer_world, write_tasks
from vilbert.data.collate import collate
from vilbert.data.refer import ReferDataset
from vilbert.tasks.config import TaskConfigError, load_task_configs


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return load_test_tokenizer(minilm_dir)


@pytest.fixture
def config(tmp_path):
    refer_world(tmp_path)
    write_tasks(tmp_path / "tasks.yml", {"TASK11": refer_entry()})
    return load_task_configs(tmp_path / "tasks.yml")[11]


def test_refer_train_merges_ground_truth_and_thresholds_iou(config, tokenizer):
    train = ReferDataset(config, "train", tokenizer)
    assert [(e["ref_id"], e["sent_id"]) for e in train.entries] == [(0, 0), (0, 1)]
    item = train[0]
    assert tokenizer.decode(item["input_ids"][item["attention_mask"] == 1], skip_special_tokens=True) == "left guy"
    np.testing.assert_array_equal(item["ref_box"], [10, 10, 50, 50])
    # Rows: global (whole image), gt 1, gt 2, det 0, det 1, det 2 (6 = max_region_num).
    np.testing.assert_array_equal(item["region_boxes"][1], [10, 10, 50, 50])
    np.testing.assert_array_equal(item["region_boxes"][3], [10, 10, 50, 50])
    # IoU with the referred box: whole image 1600/20000 = 0.08 -> 0 (below 0.5 on training).
    np.testing.assert_allclose(item["target"], [0, 1, 0, 1, 0, 0], atol=1e-6)
    assert item["image_attention_mask"].tolist() == [1] * 6


def test_refer_eval_uses_detections_and_raw_iou(config, tokenizer):
    val = ReferDataset(config, "val", tokenizer)
    item = val[0]  # "right one": ann 2 = [100, 20, 150, 80]
    np.testing.assert_array_equal(item["ref_box"], [100, 20, 150, 80])
    # Rows: global, det 0, det 1, det 2, padding x2. det 1 = [100, 20, 150, 50]: IoU 1500/3000.
    np.testing.assert_allclose(item["target"], [3000 / 20000, 0, 0.5, 0, 0, 0], atol=1e-6)
    assert item["image_attention_mask"].tolist() == [1, 1, 1, 1, 0, 0]
    batch = collate([item])
    assert batch["region_boxes"].shape == (1, 6, 4) and batch["ref_box"].shape == (1, 4)
    assert batch["target"].shape == (1, 6) and batch["ref_id"].tolist() == [1]

    # The toolkit's split names: testA / testB alone, "test" both.
    assert [e["ref_id"] for e in ReferDataset(config, "testB", tokenizer).entries] == [3]
    assert [e["ref_id"] for e in ReferDataset(config, "test", tokenizer).entries] == [2, 3]


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_refer_refuses_unsafe_pickles(tmp_path, config, tokenizer):
    refs = tmp_path / "refer" / "refcoco+" / "refs(unc).p"
    refs.write_bytes(pickle.dumps([{"ref_id": 0, "evil": _Boom()}]))
    with pytest.raises(TaskConfigError, match=r"refs\(unc\).p: refused to unpickle builtins.print"):
        ReferDataset(config, "val", tokenizer)


def test_refer_missing_files_are_named(tmp_path, config, tokenizer):
    (tmp_path / "refer" / "refcoco+" / "instances.json").unlink()
    with pytest.raises(TaskConfigError, match=r"TASK11 \(refcoco\+\).*instances.json not found"):
        ReferDataset(config, "val", tokenizer)
    (tmp_path / "refer" / "refcoco+" / "refs(unc).p").unlink()
    with pytest.raises(TaskConfigError, match=r"refs\(unc\).p not found"):
        ReferDataset(config, "val", tokenizer)
