"""Rank-0 logging: TensorBoard scalars, a metrics.jsonl file, a tqdm bar and plain messages.

    log = TrainingLogger(log_dir, is_main=dist.is_main, total_steps=1000, initial_step=0)
    log.scalars(step, {"train/loss": 2.3, "train/lr": 1e-4})   # floats; TensorBoard + metrics.jsonl
    log.progress(step, postfix={"loss": 2.3})                  # advance the bar to `step`
    log.info("message")                                        # above the bar, rank 0 only
    log.close()

Every other rank gets the same object with every method a no-op, so the training code calls it
unconditionally. `metrics.jsonl` (one JSON object per call: {"step": N, "train/loss": ...}) is
what `benchmarks/plot_pretrain.py` reads; it needs no TensorBoard to parse. The caller syncs
device values to floats only at log time (see loop.MetricMeter).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path


class TrainingLogger:
    def __init__(self, log_dir: str | os.PathLike | None, is_main: bool = True, total_steps: int | None = None,
                 initial_step: int = 0, desc: str = "train", tensorboard: bool = True, progress_bar: bool = True):
        self.is_main = is_main
        self.writer = None
        self.jsonl = None
        self.bar = None
        if not is_main:
            return
        if log_dir is not None:
            log_dir = Path(log_dir)
            log_dir.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(log_dir / "metrics.jsonl", "a", encoding="utf-8")
            if tensorboard:
                from tensorboardX import SummaryWriter

                self.writer = SummaryWriter(logdir=str(log_dir))
        if progress_bar:
            from tqdm import tqdm

            # A bar on a terminal, occasional lines in a log file.
            self.bar = tqdm(total=total_steps, initial=initial_step, desc=desc, dynamic_ncols=True,
                            mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        clean = {k: float(v) for k, v in values.items()}
        if self.writer is not None:
            for key, value in clean.items():
                if math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
        if self.jsonl is not None:
            record = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in clean.items()}}
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()

    def progress(self, step: int, postfix: dict[str, float] | None = None) -> None:
        if self.bar is None:
            return
        if step > self.bar.n:
            self.bar.update(step - self.bar.n)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def info(self, message: str) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None


def info(message: str, is_main: bool = True) -> None:
    """Print a message from rank 0 only (for use before a TrainingLogger exists)."""
    if is_main:
        print(message, file=sys.stderr, flush=True)
