"""12-in-1's training behaviours behind train_tasks.py flags: --task_schedule round_robin (every task
one batch per round for as many rounds as the longest task has steps, the plateau pause with
--train_iter_gap, the LR schedule on the round clock) and --clean_train_sets (its lists of test
images); the defaults keep our schedule and every training item."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from _scripts_helpers import metrics_records
from _taskdata_helpers import FEATURE_DIM, nlvr2_world, snli_ve_world, vqa_world
from vilbert.finetune import (OncePerRound, PlateauPause, ProportionalSchedule, RoundRobinSchedule, SetupError,
                              clean_train_sets, item_image_ids)
from vilbert.training import load_training_state

REPO = Path(__file__).resolve().parents[1]


def fake_runs(**steps_per_epoch):
    """Stand-ins for TaskRun: one epoch of `n` steps each."""
    return [SimpleNamespace(task=SimpleNamespace(name=name), steps_per_epoch=n, total_steps=n, num_epochs=1)
            for name, n in steps_per_epoch.items()]


def play(schedule, scores=None, scheduler=None):
    """Run `schedule` to its end: the task of each step, and the (task, step) of each evaluation.
    scores: task name -> the scores its successive evaluations report."""
    order, evaluations = [], []

    def evaluate(due):
        evaluations.append((due.task.name, len(order)))
        return scores[due.task.name].pop(0) if scores else 0.0

    while (run := schedule.next_task()) is not None:
        order.append(run.task.name)
        if scheduler is not None:
            scheduler.step()
        schedule.advance(run, evaluate)
    return order, evaluations


def test_round_robin_gives_every_task_the_longest_schedule_one_batch_per_round():
    runs = fake_runs(big=4, small=2)
    schedule = RoundRobinSchedule(runs, multiplier=1.0, gap=4)
    assert schedule.rounds == 4 and schedule.total_steps == 8 and schedule.scheduler_steps == 4
    assert [run.total_steps for run in runs] == [4, 4] and runs[1].num_epochs == 2  # small repeats its data
    order, evaluations = play(schedule)
    assert order == ["big", "small"] * 4
    # Each task is evaluated after every `its steps per epoch` rounds (on the round clock) and at the end.
    assert evaluations == [("small", 4), ("big", 8), ("small", 8)]
    assert RoundRobinSchedule(fake_runs(big=4, small=2), multiplier=1.5).rounds == 6
    assert RoundRobinSchedule(fake_runs(big=4, small=2), max_steps=5).rounds == 3

    # Ours, for comparison: each task its own epochs, in proportion (6 steps, not 8).
    ours = ProportionalSchedule(fake_runs(big=4, small=2))
    assert ours.total_steps == ours.scheduler_steps == 6


def test_a_plateaued_task_trains_every_gap_rounds_until_its_score_drops():
    # Both tasks are evaluated after every round. b: best 60 after round 0, no better after rounds
    # 1 and 2 (two bad evaluations > patience 1): paused from round 3 on; round 4 is its cooldown;
    # paused again after round 5; 59.0 after round 6 is more than 0.5% below its best: it trains again
    # from round 7. Paused, it trains only in round 4 (4 % --train_iter_gap == 0).
    b_scores = [60.0, 60.0, 60.0, 59.9, 59.8, 59.8, 59.0, 61.0, 62.0]
    for names in (("a", "b"), ("b", "a")):  # b last and b first: its new state is used in the next round
        schedule = RoundRobinSchedule(fake_runs(**{name: 1 for name in names}), gap=4)
        schedule.rounds = 9
        order, evaluations = play(schedule, {"a": [10.0 + r for r in range(9)], "b": list(b_scores)})
        b_rounds = [order[:i].count("a") - (names[0] == "a") for i, name in enumerate(order) if name == "b"]
        assert b_rounds == [0, 1, 2, 4, 7, 8], names
        assert len(evaluations) == 18


def test_plateau_pause_matches_twelve_in_ones_stop_on_plateau():
    """Hand-traced through 12-in-1's MultiTaskStopOnPlateau(mode="max", patience=1,
    continue_threshold=0.005, cooldown=1, threshold=0.001)."""
    plateau = PlateauPause()
    paused = []
    for score in [50.0, 50.04, 50.0, 49.9, 49.7, 49.7, 49.7, 49.7, 60.0]:
        plateau.step(score)
        paused.append(plateau.paused)
    # 50.04 is not 0.1% better than 50 (bad 1); 50.0 is bad 2 > 1: pause, cooldown 1. 49.9 falls in
    # the cooldown and is not 0.5% below 50 (49.75); 49.7 is: resume, cooldown 1. The next 49.7 is in
    # the cooldown, then bad 1, bad 2: pause. A better score does not resume a paused task.
    assert paused == [False, False, True, True, False, False, False, True, True]


def test_the_lr_schedule_advances_once_per_round():
    runs = fake_runs(a=3, b=1, c=2)
    schedule = RoundRobinSchedule(runs)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = OncePerRound(torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1)), schedule)
    lrs = []
    while (run := schedule.next_task()) is not None:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        schedule.advance(run, lambda due: 0.0)
    assert lrs == pytest.approx([1, 1 / 2, 1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3, 1 / 4, 1 / 4])


def test_round_robin_resumes_where_it_stopped():
    first = RoundRobinSchedule(fake_runs(a=2, b=3))
    taken = []
    for _ in range(3):
        run = first.next_task()
        taken.append(run.task.name)
        first.advance(run, lambda due: 5.0)
    second = RoundRobinSchedule(fake_runs(a=2, b=3))
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert taken + play(second)[0] == play(RoundRobinSchedule(fake_runs(a=2, b=3)))[0]
    with pytest.raises(ValueError, match="another --task_schedule"):
        RoundRobinSchedule(fake_runs(a=2)).load_state_dict(ProportionalSchedule([]).state_dict())


@pytest.fixture()
def entailment(tmp_path):
    """12-in-1's NLVR2 and VisualEntailment entries on generated data, and a tiny config."""
    released = yaml.safe_load((REPO / "vilbert_tasks.yml").read_text())
    entries = {}
    for key, write_world, store in (("TASK12", nlvr2_world, "nlvr2.lmdb"), ("TASK13", snli_ve_world, "flickr.lmdb")):
        dataroot = write_world(tmp_path)
        entries[key] = dict(released[key], dataroot=str(dataroot), features_h5path1=str(dataroot / store),
                            max_seq_length=12, max_region_num=6, batch_size=2, eval_batch_size=4, num_epoch=1)
    (tmp_path / "tasks.yml").write_text(yaml.safe_dump(entries, sort_keys=False))
    config = json.loads((REPO / "config" / "vilbert_tiny.json").read_text())
    config.update(vocab_size=30522, v_feature_size=FEATURE_DIM)
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    return tmp_path


def train(root: Path, minilm_dir, name: str, *flags) -> list:
    """train_tasks.main on NLVR2 (2 steps an epoch) and SNLI-VE (3): the task of each step."""
    import train_tasks

    assert train_tasks.main(["--tasks_config", str(root / "tasks.yml"), "--tasks", "12-13", "--bert_model",
                             str(minilm_dir), "--config_file", str(root / "tiny.json"), "--num_workers", "0",
                             "--output_dir", str(root / name), "--log_every", "1", "--save_every", "-1",
                             "--task_specific_tokens", *flags]) == 0
    records = metrics_records(root / name / "NLVR2-VisualEntailment")
    return [key.split("/")[1] for record in records for key in record if key.endswith("/loss")]


def test_train_tasks_round_robin_and_clean_train_sets(entailment, minilm_dir, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO))
    # Ours (the default) would take 2 + 3 steps, VisualEntailment first (tests/test_scripts.py).
    assert train(entailment, minilm_dir, "rr", "--task_schedule", "round_robin", "--save_every", "3",
                 "--keep_last", "0") == ["NLVR2", "VisualEntailment"] * 3
    # The checkpoint after step 3 (NLVR2, VisualEntailment, NLVR2) resumes at round 1's second task.
    state = load_training_state(entailment / "rr" / "NLVR2-VisualEntailment" / "checkpoints" / "step-3")
    assert {k: state["schedule"][k] for k in ("round", "position", "first_in_round")} == \
        {"round": 1, "position": 1, "first_in_round": False}

    # SNLI-VE's training hypotheses are on Flickr30k pictures 11, 12, 13 (two each): 12-in-1's list
    # of Flickr30k test pictures names 12, so 4 remain (2 steps); NLVR2 has no list (not cleaned).
    cache = entailment / "snli_ve" / "cache"
    cache.mkdir(exist_ok=True)
    np.save(cache / "flickr_test_ids.npy", np.array([12, 4000]))
    order = train(entailment, minilm_dir, "clean", "--clean_train_sets")
    assert order.count("VisualEntailment") == 2 and order.count("NLVR2") == 2
    err = capsys.readouterr().err
    assert "VisualEntailment trains on 4 of 6 items" in err and "NLVR2 has no list of test images" in err


def test_cleaning_reads_each_readers_images_and_names_a_missing_list(tmp_path, minilm_dir):
    from _taskdata_helpers import load_test_tokenizer, task_entry, write_tasks
    from vilbert.finetune import load_tasks

    tokenizer = load_test_tokenizer(minilm_dir)
    dataroot = vqa_world(tmp_path)
    (dataroot / "cache").mkdir()
    (dataroot / "cache" / "train_label2ans.json").write_text(json.dumps(["red", "blue", "green"]))
    tasks = load_tasks("1", write_tasks(tmp_path / "t.yml", {"TASK1": task_entry(
        dataroot=str(dataroot), features_h5path1=str(tmp_path / "features.lmdb"))}))
    train_set = tasks[1].dataset("train", tokenizer)  # questions 100..111 on images 1..4 in turn
    assert [ids for ids in item_image_ids(train_set)] == [(1 + k % 4,) for k in range(12)]
    with pytest.raises(SetupError, match=r"coco_test_ids.npy not found"):
        clean_train_sets(tasks, {1: train_set}, log=lambda message: None)

    np.save(dataroot / "cache" / "coco_test_ids.npy", np.array([2, 3]))
    cleaned = clean_train_sets(tasks, {1: train_set}, log=lambda message: None)[1]
    assert len(cleaned) == 6 and cleaned.num_labels == train_set.num_labels
    assert item_image_ids(cleaned) == [(1,), (4,)] * 3
    for index, kept in ((0, 0), (1, 3), (5, 11)):
        assert all(np.array_equal(cleaned[index][k], train_set[kept][k]) for k in ("input_ids", "target"))
