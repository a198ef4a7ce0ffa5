"""train_tasks.py under faults (docs/RELIABILITY.md): under `torchrun --max-restarts=2` a worker is
SIGKILLed while both tasks are in the middle of an epoch; torchrun restarts the job, `--resume auto`
continues every task at the same batch with its best checkpoint and best metric, and the job ends
as an uninterrupted run of the same size does, exactly. Real subprocesses (gloo, CPU) on the tiny
demo world; tests/_fault_runner.py injects the fault."""

import json
from types import SimpleNamespace

import pytest

from _faults_helpers import assert_same_weights, launch, ok, weights
from _scripts_helpers import make_tiny_world, save_pretraining_checkpoint, tiny_config, write_task_file
from vilbert.training import load_training_state
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
            "--precision", "fp32", "--compile", "off", "--skip_check", *extra]


def losses(run_dir):
    """Each step's logged losses (per task), the last record of a step winning (a resumed run redoes some)."""
    records = {}
    for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = {**records.get(record["step"], {}), **record}
    return {step: {k: v for k, v in r.items() if k.endswith("/loss")} for step, r in records.items()}


def best(run_dir):
    return {name: (json.loads((run_dir / "best" / name / "metrics.json").read_text()),
                   weights(run_dir / "best" / name)) for name in ("VQA", "refcoco+")}


def test_a_worker_killed_mid_epoch_under_torchrun_max_restarts(setup):
    ok(launch("train_tasks.py", flags(setup, "uninterrupted"), torchrun=2))
    # Rank 1 dies as its 19th step starts; step-16 (saved) is the newest checkpoint.
    result = ok(launch("train_tasks.py", flags(setup, "restarted", "--resume", "auto"), fault="kill_at_step:19",
                       FAULT_RANK="1", torchrun=2))
    assert "at step 16" in result.stderr and "(exitcode: -9) local_rank: 1" in result.stderr
    uninterrupted, restarted = setup.root / "uninterrupted" / RUN, setup.root / "restarted" / RUN

    # step-16 holds both tasks part way through their second epochs, each with a best from its first.
    checkpoint = restarted / "checkpoints" / "step-16"
    assert is_complete(checkpoint)
    tasks = load_training_state(checkpoint)["tasks"]
    for key, per_epoch in (("1", 7), ("11", 4)):
        assert tasks[key]["epoch"] == 1 and 0 < tasks[key]["step_in_epoch"] < per_epoch and tasks[key]["best"]

    # Every task's batches after the restart are the ones it would have had: same losses, exactly.
    assert losses(restarted) == losses(uninterrupted) and len(losses(restarted)) == TOTAL
    assert_same_weights(weights(uninterrupted / "checkpoints" / f"step-{TOTAL}"),
                        weights(restarted / "checkpoints" / f"step-{TOTAL}"))
    # Best checkpoints and metrics: the same records and weights, those from before the kill included
    # (a best of the first epoch is not evaluated again after the restart: it survived on disk and
    # in the checkpoint's state).
    for name, (record, tensors) in best(uninterrupted).items():
        record_again, tensors_again = best(restarted)[name]
        assert record_again == record
        assert_same_weights(tensors, tensors_again)
    assert (restarted / "val_metrics.json").read_text() == (uninterrupted / "val_metrics.json").read_text()
    for name, key in (("VQA", "1"), ("refcoco+", "11")):
        record = best(uninterrupted)[name][0]
        if record["step"] <= 16:  # scored before the kill, never evaluated again after the restart
            assert tasks[key]["best"]["value"] == record["value"] and tasks[key]["best"]["step"] == record["step"]
