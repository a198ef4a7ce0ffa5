"""train_tasks.py under faults (docs/RELIABILITY.md): SIGKILL in the middle of two tasks' epochs,
then `--resume auto` continues every task at the same batch with its best checkpoint and metric
intact; a worker killed under `torchrun --max-restarts=2` and the job finishes on its own. Real
subprocesses on the tiny demo world; tests/_fault_runner.py injects the faults."""

import json
from types import SimpleNamespace

import pytest

from _faults_helpers import assert_same_weights, launch, ok, weights
from _scripts_helpers import make_tiny_world, save_pretraining_checkpoint, tiny_config, write_task_file
from vilbert.training.checkpoint import is_complete

# VQA: 120 questions / 16 = 7 steps x 2 epochs, RefCOCO+: 32 / 8 = 4 steps x 2 epochs: 22 steps in turns.
TOTAL = 22
RUN = "VQA-refcoco+_t"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("faults_tasks")
    world = make_tiny_world(root)
    config = tiny_config(root / "tiny.json")
    tasks = write_task_file(world, root / "tasks.yml", TASK1={"batch_size": 16, "num_epoch": 2},
                            TASK11={"batch_size": 8, "num_epoch": 2})
    return SimpleNamespace(root=root, bert=minilm_dir, tasks=tasks,
                           pretrained=save_pretraining_checkpoint(config, root / "pretrained"))


def flags(setup, out, *extra):
    return ["--bert_model", setup.bert, "--from_pretrained", setup.pretrained, "--tasks", "1-11",
            "--tasks_config", setup.tasks, "--output_dir", setup.root / out, "--save_name", "t", "--num_workers", "0",
            "--learning_rate", "1e-4", "--log_every", "1", "--val_subset", "3", "--save_every", "8",
            "--precision", "fp32", "--compile", "off", *extra]


def losses(run_dir):
    records = {}
    for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = {**records.get(record["step"], {}), **record}  # the resumed run's last word
    return {step: {k: v for k, v in r.items() if k.endswith("/loss")} for step, r in records.items()}


def best(run_dir):
    return {name: (json.loads((run_dir / "best" / name / "metrics.json").read_text()),
                   weights(run_dir / "best" / name)) for name in ("VQA", "refcoco+")}


@pytest.fixture(scope="module")
def whole(setup):
    ok(launch("train_tasks.py", flags(setup, "whole")))
    return setup.root / "whole" / RUN


def test_sigkill_mid_epoch_resumes_every_task_at_its_batch_with_its_best(setup, whole):
    run_dir = setup.root / "killed" / RUN
    killed = launch("train_tasks.py", flags(setup, "killed"), fault="kill_at_step:19")
    assert killed.returncode == -9, killed.stderr[-3000:]
    # step-16 has both tasks part way through their second epochs, each with a best from its first.
    checkpoint = run_dir / "checkpoints" / "step-16"
    assert is_complete(checkpoint) and sorted(p.name for p in checkpoint.parent.iterdir()) == ["step-16", "step-8"]
    positions = _task_positions(checkpoint)
    assert all(0 < task["step_in_epoch"] < per_epoch and task["epoch"] == 1 and task["best"]
               for task, per_epoch in zip(positions, (7, 4))), positions
    killed_best = best(run_dir)

    resumed = ok(launch("train_tasks.py", flags(setup, "killed", "--resume", "auto")))
    assert "at step 16" in resumed.stderr
    whole_losses, again = losses(whole), losses(run_dir)
    assert sorted(again) == sorted(whole_losses) and again == whole_losses  # every task's batches, exact
    assert_same_weights(weights(whole / "checkpoints" / f"step-{TOTAL}"), weights(run_dir / "checkpoints" / f"step-{TOTAL}"))
    for name, (record, tensors) in best(whole).items():
        record_again, tensors_again = best(run_dir)[name]
        assert record_again == record
        assert_same_weights(tensors, tensors_again)
    assert (run_dir / "val_metrics.json").read_text() == (whole / "val_metrics.json").read_text()
    # The bests written before the kill (first epoch ends) were intact, and the whole run's are those
    # unless a second-epoch evaluation beat them.
    for name, (record, tensors) in killed_best.items():
        assert record["step"] <= 16 and best(run_dir)[name][0]["value"] >= record["value"]
        whole_record, whole_tensors = best(whole)[name]
        if whole_record["step"] == record["step"]:
            assert_same_weights(tensors, whole_tensors)


def _task_positions(checkpoint):
    from vilbert.training import load_training_state

    tasks = load_training_state(checkpoint)["tasks"]
    return [{"epoch": tasks[key]["epoch"], "step_in_epoch": tasks[key]["step_in_epoch"], "best": bool(tasks[key]["best"])}
            for key in ("1", "11")]


def test_torchrun_max_restarts_finishes_a_finetuning_job_whose_worker_was_killed(setup):
    """Rank 1 is SIGKILLed at its 10th step (after step-8 was saved); torchrun restarts both workers,
    which resume from step-8 and finish with the weights of an uninterrupted 2-process run, exactly
    (Adam turns the float rounding between 1 and 2 processes into about 1e-3 over 12 steps)."""
    short = ["--max_steps", "12"]
    ok(launch("train_tasks.py", flags(setup, "two", *short), torchrun=2))
    result = ok(launch("train_tasks.py", flags(setup, "restarts", *short, "--resume", "auto"), fault="kill_at_step:10",
                       FAULT_RANK="1", torchrun=2))
    assert "at step 8" in result.stderr
    uninterrupted, restarted = setup.root / "two" / RUN, setup.root / "restarts" / RUN
    assert_same_weights(weights(uninterrupted / "checkpoints" / "step-12"), weights(restarted / "checkpoints" / "step-12"))
    assert losses(restarted) == losses(uninterrupted)
