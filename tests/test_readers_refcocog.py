"""RefCOCOg (12-in-1's refcocog, V-logit): the refer toolkit's UMD partition (refs(umd).p), ground
truth joined on the training split, IoU > 0.5 accuracy on the val split."""

import pytest
import torch

from _taskdata_twelve_a import build_one_task, refcocog_world
from vilbert.data.collate import collate
from vilbert.tasks.config import TaskConfigError


def _task(tmp_path):
    refcocog_world(tmp_path)
    return build_one_task(tmp_path, 11, name="refcocog", type="V-logit", dataroot="refer",
                          features_h5path1="refer/det.lmdb", features_h5path2="refer/gt.lmdb")


def test_refcocog_reads_the_umd_partition(tmp_path, tokenizer):
    task = _task(tmp_path)
    assert (task.reader.name, task.head) == ("refer_umd", "vision_logit")
    train = task.dataset("train", tokenizer)
    assert [(e["ref_id"], e["sent_id"]) for e in train.entries] == [(1, 2), (2, 3)]  # refs(unc).p: ref 0
    item = train[0]  # "right one", ann 2 = [100, 20, 150, 80]
    assert tokenizer.decode(item["input_ids"][item["attention_mask"] == 1], skip_special_tokens=True) == "right one"
    # Rows: global, gt [10,10,50,50], gt [100,20,150,80], det 0, det 1 (IoU 1500 / 3000 = 0.5, kept), det 2.
    assert item["target"].tolist() == pytest.approx([0, 0, 1, 0, 0.5, 0])
    assert [e["ref_id"] for e in task.dataset("test", tokenizer).entries] == [3]


def test_refcocog_accuracy_is_iou_above_half_of_the_top_region(tmp_path, tokenizer):
    task = _task(tmp_path)
    val = task.dataset("val", tokenizer)
    assert [(e["ref_id"], e["sent_id"], e["image_id"]) for e in val.entries] == [(0, 0, 10), (0, 1, 10)]
    batch = collate([val[0], val[1]])  # rows: global, det 0, det 1, det 2, padding x2
    # Ref 0 (ann 1 = [10, 10, 50, 50]): sentence 0 picks det 0, the same box (IoU 1); sentence 1 picks
    # the whole image (row 0): IoU 1600 / 20000.
    logits = torch.zeros(2, 6, 1)
    logits[0, 1] = logits[1, 0] = 5.0
    logits[:, 4:] = 50.0  # padding is never chosen
    evaluator = task.evaluator(val)
    evaluator.update(logits, batch)
    assert evaluator.compute() == {"accuracy": 50.0}
    first, second = evaluator.results()
    assert (first["ref_id"], first["sent_id"], first["box"], first["correct"]) == (0, 0, [10, 10, 50, 50], True)
    assert second["iou"] == pytest.approx(0.08) and second["box"] == [0, 0, 200, 100] and not second["correct"]


def test_refcocog_without_the_umd_pickle_names_it(tmp_path, tokenizer):
    task = _task(tmp_path)
    (tmp_path / "refer" / "refcocog" / "refs(umd).p").unlink()
    with pytest.raises(TaskConfigError, match=r"TASK11 \(refcocog\).*refs\(umd\).p not found"):
        task.dataset("val", tokenizer)
