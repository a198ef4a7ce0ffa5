"""12-in-1's own task-file entries for VisualDialog (3), Visual7w (4), GuessWhat (14) and
GuessWhatPointing (17) run through train_tasks.py and eval_tasks.py (in process), on generated data
in each official format: the entries are read from vilbert_tasks.yml as they are, with only the data
paths and the sizes shrunk."""

import pytest

from _taskdata_twelve_b import (REPO, guesswhat_world, shrunk_twelve_in_one_tasks, train_then_evaluate_best,
                                visdial_world, visual7w_world)

SIZES = dict(max_seq_length=12, max_region_num=10, batch_size=2, eval_batch_size=2, num_epoch=1)


def _paths(dataroot, store, gt_store=""):
    return dict(dataroot=str(dataroot), features_h5path1=str(dataroot / store),
                features_h5path2=str(dataroot / gt_store) if gt_store else "")


def test_dialog_pointing_and_guesswhat_train_and_evaluate_from_twelve_in_ones_entries(tmp_path, minilm_dir,
                                                                                      monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    dialogs = visdial_world(tmp_path, val_rounds=1)
    visual7w, guesswhat = visual7w_world(tmp_path), guesswhat_world(tmp_path)
    tasks_file = shrunk_twelve_in_one_tasks(tmp_path, {
        "TASK3": {**_paths(dialogs, "coco.lmdb"), **SIZES, "eval_batch_size": 100,  # 100 options a round
                  "train_annotations_jsonpath": str(dialogs / "visdial_1.0_train.json"),
                  "val_annotations_jsonpath": str(dialogs / "visdial_1.0_val.json")},
        "TASK4": {**_paths(visual7w, "v7w_det.lmdb", "v7w_gt.lmdb"), **SIZES},
        "TASK14": {**_paths(guesswhat, "coco.lmdb"), **SIZES},
        "TASK17": {**_paths(guesswhat, "coco.lmdb", "gw_gt.lmdb"), **SIZES, "max_seq_length": 40},
    })
    val, evaluated = train_then_evaluate_best(tasks_file, "3-4-14-17", minilm_dir)

    assert set(val["VisualDialog"]) == {"MRR", "R@1", "R@5", "R@10", "mean_rank", "NDCG"}
    assert all(set(val[name]) == {"accuracy"} for name in ("Visual7w", "GuessWhat", "GuessWhatPointing"))
    records = {"VisualDialog": 2, "Visual7w": 2, "GuessWhat": 3, "GuessWhatPointing": 2}  # rounds, questions, games
    for name, (metrics, results) in evaluated.items():
        assert metrics == pytest.approx(val[name])  # the best checkpoint of the task, evaluated again
        assert len(results) == records[name]
    assert set(evaluated) == set(records)
