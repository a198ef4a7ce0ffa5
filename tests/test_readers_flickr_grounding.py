"""FlickrGrounding (12-in-1's Flickr30k Entities grounding, V-logit): the official Sentences and
Annotations files, one example per boxed phrase, IoU targets and IoU > 0.5 accuracy."""

import pytest
import torch

from _taskdata_twelve_a import build_one_task, flickr_entities_world
from vilbert.data.flickr_grounding import read_boxes, read_sentences
from vilbert.tasks.config import TaskConfigError


def _task(tmp_path):
    flickr_entities_world(tmp_path)
    return build_one_task(tmp_path, 18, name="FlickrGrounding", type="V-logit", dataroot="flickr30k",
                          features_h5path1="flickr30k/flickr_det.lmdb", features_h5path2="flickr30k/flickr_gt.lmdb")


def test_entities_files_parse_as_the_official_format(tmp_path):
    root = flickr_entities_world(tmp_path)
    captions = read_sentences(root / "Sentences" / "41.txt")
    assert [[(p["phrase_id"], p["phrase"], p["types"]) for p in c] for c in captions] == [
        [("1", "A little girl", ["people"]), ("2", "a puppy", ["animals", "other"]), ("3", "the park", ["scene"])],
        [("1", "A child", ["people"]), ("0", "someone", ["notvisual"])]]
    # 1-based pixels to 0-based; a box named by two phrases belongs to both; no box for phrase 3.
    assert read_boxes(root / "Annotations" / "41.xml") == {
        "1": [[10, 10, 40, 40], [50, 0, 60, 10]], "2": [[0, 30, 20, 50]], "4": [[0, 30, 20, 50]]}


def test_one_example_per_boxed_phrase_with_iou_targets(tmp_path, tokenizer):
    task = _task(tmp_path)
    assert (task.reader.name, task.head) == ("flickr_grounding", "vision_logit")
    train = task.dataset("train", tokenizer)
    assert [(e["sentence"], e["ref_box"]) for e in train.entries] == [
        ("A little girl", [10, 10, 40, 40]), ("a puppy", [0, 30, 20, 50]), ("A child", [10, 10, 40, 40])]
    item = train[1]  # "a puppy": rows global, gt [10,10,40,40], gt [0,30,20,50], det 0, det 1 (IoU 0.5), det 2
    assert item["target"].tolist() == pytest.approx([0, 0, 1, 0, 0.5, 0])
    assert tokenizer.decode(item["input_ids"][item["attention_mask"] == 1], skip_special_tokens=True) == "a puppy"


def test_grounding_accuracy_hand_computed(tmp_path, tokenizer):
    task = _task(tmp_path)
    val = task.dataset("val", tokenizer)  # detections only: global, det 0, det 1, det 2, padding x2
    items = [val[i] for i in range(3)]
    batch = {key: torch.stack([torch.as_tensor(i[key]) for i in items]) for key in
             ("index", "image_attention_mask", "region_boxes", "ref_box")}
    # girl -> det 0 (IoU 1); puppy -> det 1 (IoU 0.5: not > 0.5); child -> det 2 (IoU 0).
    logits = torch.zeros(3, 6, 1)
    logits[0, 1] = logits[1, 2] = logits[2, 3] = 5.0
    logits[:, 4:] = 50.0  # padding is never chosen
    evaluator = task.evaluator(val)
    evaluator.update(logits, batch)
    assert evaluator.compute() == {"accuracy": pytest.approx(100 / 3)}
    records = evaluator.results()
    assert records[1] == {"image_id": 42, "sentence": 0, "phrase_id": "2", "phrase": "a puppy",
                          "box": [0, 30, 20, 40], "iou": 0.5, "correct": False}


def test_broken_annotation_is_named(tmp_path, tokenizer):
    task = _task(tmp_path)
    (tmp_path / "flickr30k" / "Annotations" / "42.xml").write_text("<annotation><object>")
    with pytest.raises(TaskConfigError, match=r"TASK18 \(FlickrGrounding\).*42.xml: not a Flickr30k Entities"):
        task.dataset("val", tokenizer)
    (tmp_path / "flickr30k" / "Sentences" / "43.txt").unlink()
    with pytest.raises(TaskConfigError, match=r"sentences not found: .*43.txt"):
        task.dataset("test", tokenizer)
