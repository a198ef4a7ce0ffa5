"""One task of a finetuning run: its objective (the task-type loss, scaled, with the task's
token row), its loaders, and its place in the schedule that interleaves the tasks."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from vilbert.data.collate import TEXT_KEYS, collate, model_inputs
from vilbert.tasks.registry import Task
from vilbert.training import DistInfo, EvalSampler, TrainSampler, batches_per_step
from vilbert.training.cli import SetupError
from vilbert.training.loop import TrackedDataset

NUM_TASK_TOKENS = 20  # rows of 12-in-1's task-token table (vilbert.model.NUM_TASK_TOKENS)


def task_token_row(task: Task) -> int:
    """The row of the 20-row task-token table a task uses with --task_specific_tokens: its
    `task_token` (by default 12-in-1's row for its name), not its --tasks id, so a 12-in-1
    checkpoint gets the token it was trained with from either tasks file. Every path (training,
    evaluation, retrieval scoring) takes its row from here."""
    row = task.config.task_token
    if row is None:
        raise SetupError(f"--task_specific_tokens: {task.config.describe()} has no task-token row "
                         f"(12-in-1 has no task named {task.name!r}); add 'task_token: <0-{NUM_TASK_TOKENS - 1}>' to it")
    if not 0 <= row < NUM_TASK_TOKENS:
        raise SetupError(f"--task_specific_tokens: {task.config.describe()}: task_token {row} is not a "
                         f"row of the {NUM_TASK_TOKENS}-row task-token table")
    return row


def collate_trimmed_text(samples: list[dict]) -> dict[str, torch.Tensor]:
    """The shared collate, then the text columns no row of the batch uses are cut off.

    Texts are padded to max_seq_length by the readers; most are much shorter, and attention cost
    grows with the padded length. No task has per-token targets, so nothing else needs trimming.
    """
    batch = collate(samples)
    length = int(batch["attention_mask"].sum(1).max())
    for key in TEXT_KEYS:
        batch[key] = batch[key][:, :max(length, 1)]
    return batch


def make_loader(dataset: Dataset, sampler, batch_size: int, num_workers: int, pin_memory: bool,
                seed: int = 0) -> DataLoader:
    """A DataLoader in the order of `sampler` (TrainSampler / EvalSampler with keys=False). Its own
    seeded generator leaves the global torch RNG alone, so a resumed run draws the same dropout."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    if num_workers > 0:  # a dead worker then names the sample it was loading
        dataset = TrackedDataset(dataset, num_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_trimmed_text, pin_memory=pin_memory, generator=generator,
                      drop_last=False)


class TaskObjective:
    """One task's loss for vilbert.training.train_step: the task-type loss, weighted by the task's
    loss scale (task lr / smallest task lr), averaged over the samples of the global batch."""

    names = ("loss",)

    def __init__(self, task: Task, task_tokens: bool = False):
        self.task = task
        self.weights = (float(task.loss_scale),)
        self.task_token = task_token_row(task) if task_tokens else None

    def extra_inputs(self, batch: dict) -> dict:
        if self.task_token is None:
            return {}
        rows = batch["input_ids"].shape[0]
        return {"task_tokens": torch.full((rows, 1), self.task_token, dtype=torch.long, device=batch["input_ids"].device)}

    def counts(self, batch: dict) -> torch.Tensor:
        # Every loss is a mean over the batch's samples (items, not the B*options rows).
        target = batch["target"]
        return torch.full((1,), float(target.shape[0]), device=target.device)

    def __call__(self, model, batch: dict):
        out = model(**model_inputs(batch), heads={self.task.head}, **self.extra_inputs(batch))
        loss = self.task.loss(out, batch)
        score = self.task.type.train_score(self.task.head_output(out).detach(), batch)
        stats = {"accuracy": torch.stack([score.sum() * 100, score.new_full((), score.shape[0])])}  # no host copy
        return loss.reshape(1), stats


class TaskRun:
    """One task of a finetuning run: its loaders and objective, and where it is in its schedule.

    global_batch: samples per optimizer step over all ranks and accumulation steps (the YAML's
    batch_size, as the originals divide it by the number of GPUs). num_epochs: this task's own.
    val_subset: validate on the first N validation items only (retrieval: N captions against
    every image), to keep frequent validation cheap; 0 = all.
    """

    def __init__(self, task: Task, train_set: Dataset, val_set: Optional[Dataset], *, global_batch: int,
                 accumulation: int, num_epochs: float, dist: DistInfo, num_workers: int = 0, seed: int = 0,
                 eval_batch_size: Optional[int] = None, task_tokens: bool = False, val_subset: int = 0):
        self.task = task
        self.train_set, self.val_set = train_set, val_set
        if global_batch % (dist.world_size * accumulation):
            raise SetupError(f"task {task.id} ({task.name}): batch size {global_batch} is not divisible by "
                             f"{dist.world_size} processes x {accumulation} accumulation steps")
        try:
            self.sampler = TrainSampler(len(train_set), global_batch, dist.rank, dist.world_size, seed=seed + task.id,
                                        keys=False)
        except ValueError as exc:
            raise SetupError(f"task {task.id} ({task.name}): {exc}") from None
        self.accumulation = accumulation
        self.micro_batch = global_batch // (dist.world_size * accumulation)
        pin = dist.device.type == "cuda"
        self.loader = make_loader(train_set, self.sampler, self.micro_batch, num_workers, pin, seed=seed + task.id)
        self.val_loader = None
        self.val_subset = val_subset
        if val_set is not None:
            # The evaluators score only the items they saw, so a shorter sampler is a subset.
            size = min(len(val_set), val_subset) if val_subset else len(val_set)
            sampler = EvalSampler(size, dist.rank, dist.world_size, keys=False)
            self.val_loader = make_loader(val_set, sampler, eval_batch_size or task.config.eval_batch_size,
                                          num_workers, pin)
        self.objective = TaskObjective(task, task_tokens)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.num_epochs = num_epochs
        self.total_steps = max(1, math.ceil(num_epochs * self.steps_per_epoch))
        self.epoch, self.step_in_epoch, self.steps_done = 0, 0, 0
        self.best: dict = {}  # {"metric", "value", "step", "epoch", "metrics"} of the best evaluation
        self.evaluated_at = -1  # steps_done of the latest evaluation
        self._batches = None

    @property
    def finished(self) -> bool:
        return self.steps_done >= self.total_steps

    @property
    def epoch_finished(self) -> bool:
        return self.step_in_epoch >= self.steps_per_epoch

    def next_batches(self) -> list[dict]:
        """This rank's micro-batches of the task's next optimizer step (on the CPU)."""
        if self._batches is None:
            self.sampler.set_epoch(self.epoch, self.step_in_epoch)
            self._batches = batches_per_step(self.loader, self.accumulation, where=f"task {self.task.id} "
                                             f"({self.task.name}), {self.task.config.train_split} split")
        batches = next(self._batches)
        self.steps_done += 1
        self.step_in_epoch += 1
        return batches

    def start_next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self._batches = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "steps_done": self.steps_done,
                "best": self.best, "evaluated_at": self.evaluated_at}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.steps_done, self.best = int(state["steps_done"]), dict(state["best"])
        self.evaluated_at = int(state["evaluated_at"])
        if self.epoch_finished:  # saved right at the end of an epoch
            self.start_next_epoch()
        self._batches = None


def next_task(runs: Sequence[TaskRun]) -> Optional[TaskRun]:
    """The unfinished task furthest behind its own schedule (first in order on a tie), or None.

    Comparing where in its schedule each task's next step falls (its midpoint, as a fraction of
    the task's steps) interleaves the tasks in proportion to their lengths: a task of 2N steps runs
    twice for every step of a task of N (a b a a b a), and all tasks finish together. It depends
    only on the tasks' progress, so a resumed run continues the same sequence.
    """
    pending = [run for run in runs if not run.finished]
    if not pending:
        return None
    return min(pending, key=lambda run: (run.steps_done + 0.5) / run.total_steps)


def primary_metric(task: Task) -> str:
    """The metric that picks a task's best checkpoint: the first one its reader reports."""
    return task.metrics[0]
