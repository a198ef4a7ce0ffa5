"""train_concap.py under faults (docs/RELIABILITY.md): SIGKILL half way through a checkpoint write,
a worker killed under `torchrun --max-restarts`, non-finite losses, out of memory, a full disk and
a dead DataLoader worker. Real subprocesses on config/vilbert_tiny.json and a generated world;
tests/_fault_runner.py injects each fault."""

import json

import pytest

from _faults_helpers import assert_same_weights, last_line, launch, ok, weights
from _pretrain_helpers import make_concap_dir, make_tokenizer_dir, tiny_config_file
from vilbert.training.checkpoint import find_latest_checkpoint, is_complete

STEPS = 6  # 48 captions / batch 8: one epoch


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults_pretrain")
    return dict(root=root, tokenizer=make_tokenizer_dir(root), data=make_concap_dir(root / "cc", num_train=48, num_val=8),
                config=tiny_config_file(root / "tiny.json", dropout=0.0))


def flags(world, name, *extra, steps=STEPS):
    return ["--file_path", world["data"], "--bert_model", world["tokenizer"], "--config_file", world["config"],
            "--train_batch_size", "8", "--max_steps", steps, "--learning_rate", "1e-3", "--warmup_proportion", "0.2",
            "--log_every", "1", "--num_workers", "0", "--max_seq_length", "20", "--max_region_num", "8",
            "--precision", "fp32", "--compile", "off", "--output_dir", world["root"] / "out",
            "--cache_dir", world["root"] / "cache", "--save_name", name, "--save_every", "2", "--keep_last", "2",
            "--skip_check", *extra]


def checkpoints(world, name):
    return world["root"] / "out" / name / "checkpoints"


def records(world, name):
    lines = (world["root"] / "out" / name / "logs" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


@pytest.fixture(scope="module")
def whole(world):
    ok(launch("train_concap.py", flags(world, "whole")))
    return weights(checkpoints(world, "whole") / f"step-{STEPS}")


def test_sigkill_during_a_checkpoint_write_resumes_from_the_previous_one(world, whole):
    killed = launch("train_concap.py", flags(world, "killed", "--resume", "auto"), fault="kill_in_save:4")
    assert killed.returncode == -9, killed.stderr[-3000:]
    root = checkpoints(world, "killed")
    partial = [p for p in root.iterdir() if p.name.startswith("step-4.tmp-")]
    assert len(partial) == 1 and (partial[0] / "training_state.pt").stat().st_size < 100  # half written
    assert not (root / "step-4").exists() and find_latest_checkpoint(root).name == "step-2"

    resumed = ok(launch("train_concap.py", flags(world, "killed", "--resume", "auto")))
    assert "resumed from" in resumed.stderr and "step-2 at step 2" in resumed.stderr
    assert_same_weights(whole, weights(root / f"step-{STEPS}"))  # fp32, exact
    assert sorted(p.name for p in root.iterdir()) == ["step-4", f"step-{STEPS}"]  # partial gone, pruned to 2


def test_torchrun_max_restarts_finishes_a_job_whose_worker_was_killed(world, whole):
    """Rank 1 is SIGKILLed at its 5th step (after step-4 was saved); torchrun restarts both workers,
    which resume from step-4 (--resume auto) and finish; the weights are those of one process."""
    result = ok(launch("train_concap.py", flags(world, "restarts", "--resume", "auto"), fault="kill_at_step:5",
                       FAULT_RANK="1", torchrun=2))
    assert "resumed from" in result.stderr and "step-4 at step 4" in result.stderr
    assert_same_weights(whole, weights(checkpoints(world, "restarts") / f"step-{STEPS}"), atol=1e-5)


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run_when_in_a_row(world):
    """Step 2 alone is NaN: skipped, counted, the run goes on. Steps 4, 5, 6 in a row with
    --max_nonfinite_steps 3: the run stops at the log of step 6, naming it and its captions' images."""
    result = launch("train_concap.py", flags(world, "nan", "--max_nonfinite_steps", "3"), fault="nan_steps:2,4-")
    assert result.returncode == 1
    line = last_line(result)
    assert line.startswith("train_concap.py: error: 3 steps in a row had a non-finite loss or gradient")
    assert "the last at step 6, whose batch held image ids [" in line
    logged = {r["step"]: r for r in records(world, "nan")}
    assert {step: r["train/skipped"] for step, r in logged.items()} == {1: 0, 2: 1, 3: 0, 4: 1, 5: 1}
    assert logged[3]["train/loss"] == logged[3]["train/loss"]  # finite again after the skipped step
    assert not (checkpoints(world, "nan") / "step-6").exists()  # the stop comes before any later save


def test_out_of_memory_is_one_line_naming_the_batch_and_accumulation(world):
    result = launch("train_concap.py", flags(world, "oom", "--gradient_accumulation_steps", "2"), fault="oom_at_step:2")
    assert result.returncode == 1
    assert last_line(result) == (
        "train_concap.py: error: out of memory training on Conceptual Captions: global batch 8 = micro-batch 4 per "
        "process x --gradient_accumulation_steps 2 x processes; raise --gradient_accumulation_steps (same global "
        "batch, smaller micro-batches) or lower the batch size")


def test_disk_full_while_saving_keeps_the_previous_checkpoint(world):
    result = launch("train_concap.py", flags(world, "full"), fault="enospc_in_save:4")
    assert result.returncode == 1
    root = checkpoints(world, "full")
    assert last_line(result) == (f"train_concap.py: error: cannot write checkpoint {root / 'step-4'}: No space left on "
                                 f"device ({root / 'step-4'}.tmp-{result_pid(root, result)}/training_state.pt); "
                                 f"the previous checkpoint {root / 'step-2'} is intact")
    assert [p.name for p in root.iterdir()] == ["step-2"] and is_complete(root / "step-2")


def result_pid(root, result):
    return result.stderr.split(".tmp-")[1].split("/")[0]


def test_a_dead_dataloader_worker_stops_naming_the_split_and_samples(world):
    result = launch("train_concap.py", flags(world, "worker", "--num_workers", "1"), fault="kill_worker_at:17")
    assert result.returncode == 1
    line = last_line(result)
    assert line.startswith("train_concap.py: error: the training captions: DataLoader worker (pid")
    assert "killed by signal" in line or "exited unexpectedly" in line
    indices = json.loads(line.split("dataset indices ")[1].split(")")[0])
    assert "it was loading dataset index 17, of micro-batch 1 of this pass" in line  # position 10 of the epoch
    assert 17 in indices and len(indices) == 8
