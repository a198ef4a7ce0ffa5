"""Run train_concap.py or train_tasks.py with one fault injected, for the tests/test_faults_*.py:

    python tests/_fault_runner.py train_concap.py --flags ...      (or under torchrun)

FAULT (environment) picks the fault, N counts optimizer steps from 1 in this process:
    kill_at_step:N      SIGKILL as the N-th step starts
    kill_in_save:N      SIGKILL half way through writing the training state of checkpoint step-N
    enospc_in_save:N    "No space left on device" while writing checkpoint step-N
    nan_steps:A-B,C     steps A..B and C (B empty: to the end) get a NaN loss
    oom_at_step:N       torch.OutOfMemoryError in the N-th step
    kill_worker_at:I    the DataLoader worker loading dataset item I SIGKILLs itself
Under torchrun the fault hits only the first attempt (TORCHELASTIC_RESTART_COUNT 0) of rank
FAULT_RANK (default 0), so a restarted job runs clean.
"""

import errno
import importlib
import os
import signal
import sys

import torch

script = sys.argv[1]
module = importlib.import_module(os.path.splitext(os.path.basename(script))[0])
kind, _, value = os.environ.get("FAULT", "none:").partition(":")
armed = (os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
         and os.environ.get("RANK", "0") == os.environ.get("FAULT_RANK", "0"))
steps = 0


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class NanObjective:
    """The objective of a step, its loss terms made NaN."""

    def __init__(self, objective):
        self.objective = objective

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def __call__(self, model, batch):
        terms, stats = self.objective(model, batch)
        return terms * float("nan"), stats


def _in_range(step: int, text: str) -> bool:
    first, dash, last = text.partition("-")
    if not dash:
        return step == int(first)
    return int(first) <= step and (not last or step <= int(last))


real_train_step = module.train_step


def faulty_train_step(model, micro_batches, objective, *args, **kwargs):
    global steps
    steps += 1
    if kind == "kill_at_step" and steps == int(value):
        die()
    if kind == "oom_at_step" and steps == int(value):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
    if kind == "nan_steps" and any(_in_range(steps, part) for part in value.split(",")):
        objective = NanObjective(objective)
    return real_train_step(model, micro_batches, objective, *args, **kwargs)


real_save = torch.save


def faulty_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("global_step") == int(value):
        if kind == "kill_in_save":
            with open(f, "wb") as out:  # half a file on disk, then gone
                out.write(b"PK\x03\x04 half a training state")
                out.flush()
                os.fsync(out.fileno())
            die()
        if kind == "enospc_in_save":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
    return real_save(obj, f, *args, **kwargs)


if armed and kind in ("kill_at_step", "oom_at_step", "nan_steps"):
    module.train_step = faulty_train_step
if armed and kind in ("kill_in_save", "enospc_in_save"):
    torch.save = faulty_save
if armed and kind == "kill_worker_at":
    from torch.utils.data import get_worker_info

    from vilbert.training.loop import TrackedDataset

    class DyingDataset:
        """The dataset whose item `value` kills the worker process loading it (as a segfault would)."""

        def __init__(self, dataset):
            self.dataset = dataset

        def __len__(self):
            return len(self.dataset)

        def __getattr__(self, name):
            if name == "dataset":
                raise AttributeError(name)
            return getattr(self.dataset, name)

        def __getitem__(self, key):
            if get_worker_info() is not None and (key[1] if isinstance(key, tuple) else key) == int(value):
                die()
            return self.dataset[key]

    real_init = TrackedDataset.__init__
    TrackedDataset.__init__ = lambda self, dataset, num_workers: real_init(self, DyingDataset(dataset), num_workers)

sys.exit(module.main(sys.argv[2:]))
