"""Which task trains next in a multi-task run, when each is evaluated, and the LR schedule's clock.

Two schedules (`train_tasks.py --task_schedule`):

- `proportional` (the default): each task runs its own number of epochs (its `num_epoch`); the
  task furthest behind its own schedule goes next (`next_task`), so tasks interleave in proportion
  to their lengths and finish together; a task is evaluated at the end of each of its epochs.
- `round_robin`: 12-in-1's (vilbert-multi-task train_tasks.py). Training goes in rounds
  ("iterations" there); in each round every task, in --tasks order, trains on one batch. There are
  as many rounds as the longest task's schedule has steps (num_epoch x steps per epoch), times
  `--train_iter_multiplier`, so a small task repeats its data many times over. A task is
  evaluated after every `steps_per_epoch` rounds (its epoch on the round clock) and after the last
  round. A task whose validation score stops improving is paused (`PlateauPause`): it trains only
  in rounds r with r % `--train_iter_gap` == 0 until its score drops again. The learning-rate
  schedule advances once per round, after the round's first step, as 12-in-1's does.

    schedule = RoundRobinSchedule(runs, multiplier=1.0, gap=4)   # or ProportionalSchedule(runs)
    scheduler = warmup_linear_schedule(optimizer, warmup, schedule.scheduler_steps)
    scheduler = schedule.wrap_scheduler(scheduler)
    while (run := schedule.next_task()) is not None:
        train_step(..., run.objective, optimizer, scheduler, ...)
        paused = schedule.advance(run, evaluate)   # evaluate(task run) -> its primary metric, when due
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from vilbert.finetune.run import TaskRun, next_task

SCHEDULES = ("proportional", "round_robin")


class ProportionalSchedule:
    """Our schedule: each task its own epochs, interleaved in proportion to their lengths."""

    def __init__(self, runs: Sequence[TaskRun], max_steps: int = 0):
        self.runs = list(runs)
        self.max_steps = max_steps

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (at most --max_steps)."""
        total = sum(run.total_steps for run in self.runs)
        return min(total, self.max_steps) if self.max_steps else total

    @property
    def scheduler_steps(self) -> int:
        """Length of the LR schedule, in scheduler steps (here one per optimizer step)."""
        return self.total_steps

    def wrap_scheduler(self, scheduler):
        return scheduler

    def next_task(self) -> Optional[TaskRun]:
        return next_task(self.runs)

    def advance(self, run: TaskRun, evaluate: Callable[[TaskRun], float]) -> list[TaskRun]:
        """After `run` took a step: evaluate it at the end of each of its epochs. Pauses no task."""
        if run.epoch_finished or run.finished:
            evaluate(run)
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PlateauPause:
    """12-in-1's MultiTaskStopOnPlateau as its train_tasks.py configures it (mode "max",
    patience 1, threshold 0.001 relative, cooldown 1, continue_threshold 0.005 relative): a task is
    paused after more than `patience` evaluations in a row without beating its best score by 0.1%,
    and resumes when its score falls more than 0.5% below the best. Evaluations in cooldown (the one
    after a pause or resume) do not count as bad."""

    def __init__(self, patience: int = 1, threshold: float = 0.001, continue_threshold: float = 0.005,
                 cooldown: int = 1):
        self.patience, self.threshold, self.cooldown = patience, threshold, cooldown
        self.continue_threshold = continue_threshold
        self.best = -math.inf
        self.bad_evaluations = 0
        self.cooldown_left = 0
        self.paused = False

    def step(self, score: float) -> None:
        if score > self.best * (1.0 + self.threshold):
            self.best, self.bad_evaluations = score, 0
        else:
            self.bad_evaluations += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_evaluations = 0
        if self.bad_evaluations > self.patience:
            self.paused, self.cooldown_left, self.bad_evaluations = True, self.cooldown, 0
        elif self.paused and score < self.best * (1.0 - self.continue_threshold):
            self.paused, self.cooldown_left, self.bad_evaluations = False, self.cooldown, 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_evaluations": self.bad_evaluations, "cooldown_left": self.cooldown_left,
                "paused": self.paused}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_evaluations = float(state["best"]), int(state["bad_evaluations"])
        self.cooldown_left, self.paused = int(state["cooldown_left"]), bool(state["paused"])


class OncePerRound:
    """A scheduler whose step() advances the wrapped LR scheduler only after a round's first
    optimizer step (12-in-1 steps its warmup_linear schedule once per iteration)."""

    def __init__(self, scheduler, schedule: "RoundRobinSchedule"):
        self.scheduler, self.schedule = scheduler, schedule

    def step(self) -> None:
        if self.schedule.first_in_round:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()


class RoundRobinSchedule:
    """12-in-1's schedule (module docstring). Every task's `total_steps` becomes the number of
    rounds, so its log line and `finished` read as on the round clock."""

    def __init__(self, runs: Sequence[TaskRun], multiplier: float = 1.0, gap: int = 4, max_steps: int = 0):
        if multiplier <= 0:
            raise ValueError(f"--train_iter_multiplier must be positive, got {multiplier}")
        if gap < 1:
            raise ValueError(f"--train_iter_gap must be at least 1 with --task_schedule round_robin, got {gap}")
        self.runs = list(runs)
        self.gap, self.max_steps = gap, max_steps
        self.rounds = max(1, math.ceil(multiplier * max(run.total_steps for run in self.runs)))
        if max_steps:  # the LR schedule ends where --max_steps stops the run
            self.rounds = min(self.rounds, math.ceil(max_steps / len(self.runs)))
        for run in self.runs:
            run.total_steps = self.rounds
            run.num_epochs = self.rounds / run.steps_per_epoch
        self.plateaus = [PlateauPause() for _ in self.runs]
        self.round, self.position = 0, 0  # the next step: runs[position] in round `round`
        self.first_in_round = True  # whether the step being taken is its round's first

    @property
    def total_steps(self) -> int:
        """Optimizer steps when no task is paused (fewer when some are), at most --max_steps."""
        total = self.rounds * len(self.runs)
        return min(total, self.max_steps) if self.max_steps else total

    @property
    def scheduler_steps(self) -> int:
        return self.rounds

    def wrap_scheduler(self, scheduler) -> OncePerRound:
        return OncePerRound(scheduler, self)

    def _trains(self, index: int) -> bool:
        return not self.plateaus[index].paused or self.round % self.gap == 0

    def next_task(self) -> Optional[TaskRun]:
        if self.round >= self.rounds:
            return None
        return self.runs[self.position]

    def advance(self, run: TaskRun, evaluate: Callable[[TaskRun], float]) -> list[TaskRun]:
        """After `run` (= next_task()) took a step: move to the next task that trains. At each round
        completed on the way, `evaluate(task run) -> its primary metric` runs for every task whose
        evaluation falls due, and the scores feed the plateau pauses before the next round's tasks
        are picked. Returns the tasks those evaluations paused."""
        newly_paused: list[TaskRun] = []
        self.first_in_round = False
        while True:
            self.position += 1
            if self.position == len(self.runs):
                self.position, self.round, self.first_in_round = 0, self.round + 1, True
                for due, plateau in zip(self.runs, self.plateaus):
                    if self.round % due.steps_per_epoch == 0 or self.round == self.rounds:
                        was_paused = plateau.paused
                        plateau.step(evaluate(due))
                        if plateau.paused and not was_paused:
                            newly_paused.append(due)
            if self.round >= self.rounds or self._trains(self.position):
                return newly_paused

    def state_dict(self) -> dict:
        return {"round": self.round, "position": self.position, "first_in_round": self.first_in_round,
                "plateaus": [p.state_dict() for p in self.plateaus]}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            raise ValueError("the checkpoint was written by a run with another --task_schedule")
        self.round, self.position = int(state["round"]), int(state["position"])
        self.first_in_round = bool(state["first_in_round"])
        for plateau, saved in zip(self.plateaus, state["plateaus"]):
            plateau.load_state_dict(saved)


def build_schedule(kind: str, runs: Sequence[TaskRun], *, multiplier: float = 1.0, gap: int = 4,
                   max_steps: int = 0):
    """`--task_schedule` -> ProportionalSchedule or RoundRobinSchedule."""
    if kind == "proportional":
        return ProportionalSchedule(runs, max_steps)
    if kind == "round_robin":
        return RoundRobinSchedule(runs, multiplier, gap, max_steps)
    raise ValueError(f"--task_schedule {kind!r} is not one of {', '.join(SCHEDULES)}")
