"""Faults around checkpoints and the training step, in process: incomplete or truncated checkpoints
are never resumed from, a save that runs out of disk or hits a read-only file system leaves the
previous checkpoint intact and says so, pruning keeps the newest complete checkpoint, and a
non-finite step touches neither the weights nor the optimizer state (docs/RELIABILITY.md)."""

import errno
import json
import os
import resource
import signal

import pytest
import torch

from test_training import SINGLE, TokenObjective, ToyMLM, toy_batch
from vilbert.training import (MetricMeter, Precision, build_optimizer, find_latest_checkpoint, load_training_state,
                              save_checkpoint, train_step, warmup_linear_schedule)
from vilbert.training import checkpoint as ckpt
from vilbert.training.checkpoint import CheckpointError, list_checkpoints, recover_directory, replace_directory
from vilbert.training.loop import NonFiniteLossError, out_of_memory_error
from vilbert.training.cli import RunError

torch.set_num_threads(1)


def save(root, step, model, keep_last=None):
    return save_checkpoint(root, step, model, {"epoch": 0, "step_in_epoch": step}, keep_last=keep_last)


def test_manifest_rejects_truncated_or_partial_checkpoints(tmp_path):
    model = ToyMLM()
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        save(root, step, model)
    manifest = json.loads((root / "step-6" / "complete.json").read_text())["files"]
    assert set(manifest) == {"config.json", "model.safetensors", "training_state.pt"}
    # Truncated weights (a copy cut short): step-6 no longer counts.
    weights = root / "step-6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    # A directory with a training state but no manifest and no weights: not complete either.
    (root / "step-8").mkdir()
    (root / "step-8" / "training_state.pt").write_bytes(b"x")
    (root / "step-8" / "config.json").write_text("{}")
    assert [p.name for p in list_checkpoints(root)] == ["step-2", "step-4"]
    assert find_latest_checkpoint(root).name == "step-4"
    # A corrupt manifest is incomplete too; a checkpoint from before manifests (three files) is not.
    (root / "step-4" / "complete.json").write_text("{not json")
    (root / "step-2" / "complete.json").unlink()
    assert [p.name for p in list_checkpoints(root)] == ["step-2"]


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """A real write error from the kernel: RLIMIT_FSIZE makes any write past 2 KiB fail (EFBIG), as
    a full disk fails with ENOSPC, half way through the weights."""
    model = ToyMLM(vocab=200, width=16)  # model.safetensors of about 27 KB
    root = tmp_path / "checkpoints"
    save(root, 2, model)
    before = {p.name: p.read_bytes() for p in (root / "step-2").iterdir()}
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, old_limit[1]))
    try:
        with pytest.raises(CheckpointError) as caught:
            save(root, 4, model, keep_last=1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    message = str(caught.value)
    assert "\n" not in message and f"cannot write checkpoint {root / 'step-4'}" in message
    assert f"the previous checkpoint {root / 'step-2'} is intact" in message
    assert sorted(p.name for p in root.iterdir()) == ["step-2"]  # no step-4, no .tmp-*, nothing pruned
    assert {p.name: p.read_bytes() for p in (root / "step-2").iterdir()} == before
    assert load_training_state(root / "step-2")["global_step"] == 2


def test_read_only_output_and_the_first_save(tmp_path, monkeypatch):
    model = ToyMLM()
    root = tmp_path / "checkpoints"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(root))

    monkeypatch.setattr(ckpt.Path, "mkdir", read_only)
    with pytest.raises(CheckpointError, match="Read-only file system.*no earlier checkpoint exists"):
        save(root, 2, model)
    monkeypatch.undo()
    save(root, 2, model)
    monkeypatch.setattr(ckpt.os, "replace", read_only)  # writes succeed, the final rename does not
    with pytest.raises(CheckpointError, match=r"Read-only file system.*step-2 is intact"):
        save(root, 4, model, keep_last=1)
    monkeypatch.undo()
    assert [p.name for p in root.iterdir()] == ["step-2"] and ckpt.is_complete(root / "step-2")


def test_pruning_never_removes_the_newest_complete_checkpoint(tmp_path):
    model = ToyMLM()
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        save(root, step, model, keep_last=1)
    assert [p.name for p in list_checkpoints(root)] == ["step-4"]
    (root / "step-9").mkdir()  # an incomplete newer directory does not count as a checkpoint to keep
    (root / "step-9" / "training_state.pt").write_bytes(b"")
    save(root, 6, model, keep_last=1)
    assert [p.name for p in list_checkpoints(root)] == ["step-6"]
    # A run resumed from an older checkpoint saving an older step keeps what it just wrote.
    save(root, 3, model, keep_last=1)
    assert (root / "step-3").is_dir() and ckpt.is_complete(root / "step-3")


def test_a_kill_between_the_renames_of_a_replace_is_recovered(tmp_path, monkeypatch):
    final, new = tmp_path / "best", tmp_path / "best.tmp"
    final.mkdir(), new.mkdir()
    (final / "weights").write_text("old"), (new / "weights").write_text("new")
    real_replace, calls = os.replace, []

    def die_on_second(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands in for the process dying here
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        replace_directory(new, final)
    monkeypatch.undo()
    assert not final.exists()
    recover_directory(final)
    assert (final / "weights").read_text() == "old"
    replace_directory(new, final)
    assert (final / "weights").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]


class NanObjective(TokenObjective):
    def __call__(self, model, batch):
        terms, stats = super().__call__(model, batch)
        return terms * float("nan"), stats


def test_a_nonfinite_step_touches_neither_weights_nor_optimizer_state():
    torch.manual_seed(0)
    model = ToyMLM()
    optimizer = build_optimizer(model, lr=1e-2)
    assert optimizer.defaults["fused"]  # the device-side skip (no host sync)
    scheduler = warmup_linear_schedule(optimizer, 0, 10)
    precision = Precision.create("fp32", torch.device("cpu"))
    meter = MetricMeter(("masked_lm",), torch.device("cpu"), max_nonfinite=3, label="toy")
    good = train_step(model, [toy_batch(4, seed=1)], TokenObjective(), optimizer, scheduler, precision, SINGLE)
    meter.update(good, 1)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(optimizer.state.values())}
    for step in (2, 3):
        bad = train_step(model, [toy_batch(4, seed=step)], NanObjective(), optimizer, scheduler, precision, SINGLE)
        assert bool(bad.skipped)
        meter.update(bad, step, lambda: "samples 7, 8")
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    for i, s in enumerate(optimizer.state.values()):
        assert all(torch.equal(state[i][k], v) for k, v in s.items())  # moments and step counts
    values = meter.compute(SINGLE, weights=(1.0,), prefix="train/")
    assert values["train/skipped"] == 2 and values["train/masked_lm"] == pytest.approx(float(good.terms[0]))
    # The third in a row reaches max_nonfinite: the next sync stops, naming the step and samples.
    meter.update(train_step(model, [toy_batch(4)], NanObjective(), optimizer, scheduler, precision, SINGLE), 4,
                 lambda: "samples 1, 2, 3")
    with pytest.raises(NonFiniteLossError, match="3 steps in a row of toy .* at step 4, whose batch held samples 1, 2, 3"):
        meter.compute(SINGLE)
    # A finite step resets the streak; with the flag at 0 nothing ever stops.
    meter = MetricMeter(("masked_lm",), torch.device("cpu"), max_nonfinite=0)
    for _ in range(3):
        meter.update(train_step(model, [toy_batch(4)], NanObjective(), optimizer, scheduler, precision, SINGLE))
    assert meter.compute(SINGLE)["skipped"] == 3


def test_out_of_memory_becomes_one_line_naming_task_and_batch():
    with pytest.raises(RunError) as caught:
        with out_of_memory_error("task 1 (VQA)", 256, 32, 4):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n(long trace)")
    message = str(caught.value)
    assert "\n" not in message and caught.value.__suppress_context__
    assert "task 1 (VQA)" in message and "global batch 256" in message and "micro-batch 32" in message
    assert "--gradient_accumulation_steps 4" in message
