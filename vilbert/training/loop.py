"""One training step and one evaluation pass, shared by pretraining and finetuning.

    for micro_batches in batches_per_step(loader, accumulation):      # this rank's share of a global batch
        out = train_step(model, micro_batches, objective, optimizer, scheduler, precision, dist)
        meter.update(out)                                               # device tensors, no host sync
        if step % log_every == 0:
            logger.scalars(step, meter.compute(dist, prefix="train/"))  # the one sync, at log time
    metrics = evaluate(model, val_loader, objective, precision, dist)   # {"masked_lm": ..., "loss": ...}

`train_step` does gradient accumulation (DDP's all-reduce only on the last micro-batch), autocast,
loss scaling (fp16), gradient clipping, the optimizer and scheduler steps. Each loss term of the
objective is averaged over the whole global batch (see objectives.py): the counts of targets of every
micro-batch on every rank are summed once per step (one small all-reduce), and each micro-batch's
mean is weighted by its share. So one rank with batch 2B and two ranks with B each take the same
step, and so does one rank with two accumulation steps of B.

A step whose gradient norm is not finite (a NaN or infinite loss makes one) leaves the weights and
the optimizer state as they were: the fused AdamW kernel skips on the device (no host sync). The
meter counts such steps and, at its one sync, stops the run after `max_nonfinite` in a row, naming
the step and its samples. Faults of the loader (a dead worker) and of memory become one-line
RunErrors naming the task (guard_workers, out_of_memory_error); docs/RELIABILITY.md lists them.

The model is called as `model(**batch)` inside the objective; batches are dicts of tensors. The
loop knows nothing about any particular data set.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .cli import RunError
from .distributed import DistInfo, all_reduce_sum, unwrap_model
from .precision import Precision


class NonFiniteLossError(RunError):
    """`max_nonfinite` steps in a row had a non-finite loss or gradient (every rank raises it)."""

    everywhere = True


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a batch dict to `device` (asynchronously from pinned memory)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def batches_per_step(loader: Iterable[dict], accumulation: int, where: str | None = None) -> Iterator[list[dict]]:
    """Group a loader's micro-batches into lists of `accumulation` (one optimizer step each); an
    incomplete group at the end is dropped (the samplers never produce one). With `where` (the
    task and split), a dead DataLoader worker becomes a RunError naming them (guard_workers)."""
    group = []
    for batch in (guard_workers(loader, where) if where else loader):
        group.append(batch)
        if len(group) == accumulation:
            yield group
            group = []


class TrackedDataset(torch.utils.data.Dataset):
    """`dataset` whose DataLoader workers note the key they are loading in shared memory, so that
    when one dies (killed by the OOM killer, a segfault in a native reader) the main process can
    name the sample (guard_workers). One shared-memory write per sample; attributes pass through."""

    def __init__(self, dataset, num_workers: int):
        import multiprocessing

        self.dataset = dataset
        self.loading = multiprocessing.Array("q", [-1] * max(num_workers, 1), lock=False)  # worker -> index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        worker = torch.utils.data.get_worker_info()
        if worker is not None:
            self.loading[worker.id] = key[1] if isinstance(key, tuple) else key
        return self.dataset[key]

    def __getattr__(self, name):
        if name == "dataset":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def guard_workers(loader, where: str) -> Iterator[dict]:
    """Iterate a DataLoader; when one of its worker processes dies raise a one-line RunError naming
    `where`, the sample the dead worker was loading (when the loader's dataset is a
    TrackedDataset) and its micro-batch, instead of torch's multi-screen trace."""
    iterator = iter(loader)
    for count in itertools.count():
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:
            if "DataLoader worker" not in str(exc):
                raise
            raise RunError(f"{where}: {str(exc).splitlines()[0].rstrip('. ')}; {_lost_samples(loader, iterator, count)}; "
                           f"--num_workers 0 shows a failing sample's own error, --resume auto continues") from None
        yield batch


def _lost_samples(loader, iterator, awaited: int) -> str:
    """Which sample and micro-batch a dead worker of `loader` was loading, as far as known."""
    size = loader.batch_size or 1
    keys = [key[1] if isinstance(key, tuple) else key for key in iter(loader.sampler)]
    batches = [keys[i:i + size] for i in range(0, len(keys), size)]
    loading = getattr(loader.dataset, "loading", None)
    workers = getattr(iterator, "_workers", None) or []
    dead = [i for i, worker in enumerate(workers) if not worker.is_alive()]
    if loading is not None and dead and loading[dead[0]] >= 0:
        index = loading[dead[0]]
        # The first micro-batch from the one awaited on that holds the sample (a worker loads in order).
        batch = next((b for b in range(awaited, len(batches)) if index in batches[b]), None)
        if batch is not None:
            return f"it was loading dataset index {index}, of micro-batch {batch} of this pass (dataset indices {batches[batch]})"
        return f"it was loading dataset index {index}"
    awaited_keys = batches[awaited] if awaited < len(batches) else []
    return f"the loader was waiting for micro-batch {awaited} of this pass (dataset indices {awaited_keys})"


@contextlib.contextmanager
def out_of_memory_error(what: str, global_batch: int, micro_batch: int, accumulation: int):
    """Turn torch.OutOfMemoryError inside the block into a one-line RunError naming `what` (the
    task) and the batch sizes, with the flag that trades memory for time."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise RunError(f"out of memory training {what}: global batch {global_batch} = micro-batch {micro_batch} per "
                       f"process x --gradient_accumulation_steps {accumulation} x processes; raise "
                       f"--gradient_accumulation_steps (same global batch, smaller micro-batches) or lower the batch "
                       f"size") from None


@dataclass
class StepOutput:
    """Detached device tensors describing one optimizer step (no host sync has happened)."""

    terms: torch.Tensor          # (K,) this rank's part of each term's global-batch mean (sum over ranks = mean)
    loss: torch.Tensor           # () this rank's part of the weighted total
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (2,) [sum, count], this rank
    grad_norm: torch.Tensor | None = None  # () global gradient norm before clipping (same on every rank)
    num_samples: int = 0         # samples this rank processed
    lrs: list[float] = field(default_factory=list)  # each param group's lr used by this step
    skipped: torch.Tensor | None = None  # () bool: the gradient norm was not finite, nothing was updated


def train_step(model: torch.nn.Module, micro_batches: Sequence[dict], objective, optimizer: torch.optim.Optimizer,
               scheduler, precision: Precision, dist: DistInfo, max_grad_norm: float | None = 1.0) -> StepOutput:
    """One optimizer step over this rank's `micro_batches` (already on the device)."""
    weights = [float(w) for w in objective.weights]
    counts = torch.stack([objective.counts(batch) for batch in micro_batches]).float()  # (A, K)
    global_counts = all_reduce_sum(counts.sum(0), dist)                                  # (K,)
    # share[a, k]: micro-batch a's fraction of term k's targets over the global batch, times the
    # number of ranks because DDP averages (not sums) the gradients of the ranks.
    share = counts / global_counts.clamp(min=1) * dist.world_size                        # (A, K)

    terms_sum = torch.zeros_like(global_counts)
    stats_sum: dict[str, torch.Tensor] = {}
    last = len(micro_batches) - 1
    for i, batch in enumerate(micro_batches):
        sync = contextlib.nullcontext() if i == last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with precision.autocast():
                terms, stats = objective(model, batch)
            # A term with no target in this micro-batch has an undefined mean (0/0); its share is 0.
            terms = torch.where(counts[i] > 0, terms.float(), torch.zeros_like(terms, dtype=torch.float32))
            weighted = terms * share[i]
            loss = sum(w * weighted[k] for k, w in enumerate(weights))
            precision.backward(loss)
        terms_sum += terms.detach() * share[i]
        for name, value in stats.items():
            stats_sum[name] = stats_sum.get(name, 0) + value.detach().float()

    precision.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if max_grad_norm:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    # Not finite: a NaN/inf loss or gradient on some rank (DDP's all-reduce spread it to every
    # rank, so every rank skips the same steps). The GradScaler (fp16) skips such steps itself.
    skipped = ~torch.isfinite(grad_norm)
    lrs = [group["lr"] for group in optimizer.param_groups]
    precision.step(optimizer, skip=skipped)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)

    terms_sum /= dist.world_size
    num_samples = sum(_batch_size(batch) for batch in micro_batches)
    total = sum(w * terms_sum[k] for k, w in enumerate(weights))
    return StepOutput(terms=terms_sum, loss=total, stats=stats_sum,
                      grad_norm=grad_norm.detach(), num_samples=num_samples, lrs=lrs, skipped=skipped)


def _batch_size(batch: dict) -> int:
    for value in batch.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return value.shape[0]
    return 0


class MetricMeter:
    """Running sums of StepOutputs on the device; `compute` syncs once and resets.

    Losses are averaged over the steps since the last compute that were not skipped, statistics
    are sum/count over them, samples/s counts every rank's samples over the wall time since the
    last compute, "skipped" counts the skipped steps. `max_nonfinite` skipped steps in a row
    (counted across computes) make `compute` raise NonFiniteLossError naming the step and its
    samples (`update`'s sample_ids: a callable describing them, only called then); 0 never stops.
    """

    def __init__(self, names: Sequence[str], device: torch.device, max_nonfinite: int = 10, label: str = ""):
        self.names = tuple(names)
        self.device = device
        self.max_nonfinite = max_nonfinite
        self.label = label
        self.streak = torch.zeros((), device=device)  # consecutive skipped steps so far
        self.reset()

    def reset(self) -> None:
        self.terms = torch.zeros(len(self.names), device=self.device)
        self.grad_norm = torch.zeros((), device=self.device)
        self.skipped = torch.zeros((), device=self.device)
        self.stopped_at = torch.zeros((), device=self.device)  # 1 + the update that reached the limit, 0: none
        self.stats: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.samples = 0
        self.where: list[tuple[int | None, Callable[[], str] | None]] = []
        self.started = time.perf_counter()

    def update(self, out: StepOutput, step: int | None = None, sample_ids: Callable[[], str] | None = None) -> None:
        skipped = out.skipped if out.skipped is not None else torch.zeros((), dtype=torch.bool, device=self.device)
        self.terms += torch.where(skipped, 0.0, out.terms)
        if out.grad_norm is not None:
            self.grad_norm += torch.where(skipped, 0.0, out.grad_norm.float())
        for name, value in out.stats.items():
            self.stats[name] = self.stats.get(name, 0) + torch.where(skipped, 0.0, value)
        self.skipped += skipped
        self.streak = (self.streak + 1) * skipped
        if self.max_nonfinite:
            first = (self.streak >= self.max_nonfinite) & (self.stopped_at == 0)
            self.stopped_at = torch.where(first, float(self.steps + 1), self.stopped_at)
        self.where.append((step, sample_ids))
        self.steps += 1
        self.samples += out.num_samples

    def compute(self, dist: DistInfo, weights: Sequence[float] | None = None, prefix: str = "") -> dict[str, float]:
        """Global averages as floats (a collective call: every rank must call it)."""
        stat_names = sorted(self.stats)
        extra = torch.tensor([float(self.samples)], device=self.device)
        # The gradient norm and the skipped steps are the same on every rank; the all-reduce sums
        # them world_size times.
        packed = torch.cat([self.terms, self.grad_norm.reshape(1), extra, self.skipped.reshape(1),
                            self.stopped_at.reshape(1)] + [self.stats[name] for name in stat_names])
        all_reduce_sum(packed, dist)
        values = packed.tolist()  # the one host sync
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        k = len(self.names)
        skipped = round(values[k + 2] / dist.world_size)
        stopped_at = round(values[k + 3] / dist.world_size)
        if stopped_at:
            self._stop(stopped_at - 1)
        steps = self.steps - skipped if self.steps > skipped else float("nan") if self.steps else 1
        result = {prefix + name: values[i] / steps for i, name in enumerate(self.names)}
        if weights is not None:
            result[prefix + "loss"] = sum(w * values[i] / steps for i, w in enumerate(weights))
        result[prefix + "grad_norm"] = values[k] / dist.world_size / steps
        result[prefix + "samples_per_s"] = values[k + 1] / elapsed
        result[prefix + "skipped"] = skipped
        for j, name in enumerate(stat_names):
            total, count = values[k + 4 + 2 * j], values[k + 5 + 2 * j]
            result[prefix + name] = total / count if count else float("nan")
        self.reset()
        return result

    def _stop(self, update: int) -> None:
        step, sample_ids = self.where[update]
        held = sample_ids() if sample_ids is not None else "samples not recorded"
        label = f" of {self.label}" if self.label else ""
        raise NonFiniteLossError(f"{self.max_nonfinite} steps in a row{label} had a non-finite loss or gradient and "
                                 f"were skipped; the last at step {step}, whose batch held {held} "
                                 f"(weights and optimizer state are from before the first of them)")


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[dict], objective, precision: Precision,
             dist: DistInfo) -> dict[str, float]:
    """Each term's mean over all targets of the whole evaluation set (summed over ranks), the
    weighted total as "loss", and every statistic of the objective (sum / count).

    Runs the bare model (not DDP: ranks may hold different numbers of batches) in eval mode and
    restores the previous mode. Every rank must call it.
    """
    bare = unwrap_model(model)
    was_training = bare.training
    bare.eval()
    k = len(objective.names)
    sums = torch.zeros(k, device=dist.device)
    counts = torch.zeros(k, device=dist.device)
    stats: dict[str, torch.Tensor] = {}
    for batch in loader:
        batch = to_device(batch, dist.device)
        with precision.autocast():
            terms, batch_stats = objective(bare, batch)
        batch_counts = objective.counts(batch).float()
        sums += torch.where(batch_counts > 0, terms.float() * batch_counts, torch.zeros_like(sums))
        counts += batch_counts
        for name, value in batch_stats.items():
            stats[name] = stats.get(name, 0) + value.float()
    bare.train(was_training)

    # Every rank must contribute the same statistics, even one with no batch at all.
    stat_names = sorted(set().union(*_gather_names(stats, dist)))
    packed = torch.cat([sums, counts] + [stats.get(name, torch.zeros(2, device=dist.device)) for name in stat_names])
    values = all_reduce_sum(packed, dist).tolist()
    result = {}
    total = 0.0
    for i, name in enumerate(objective.names):
        mean = values[i] / values[k + i] if values[k + i] else 0.0
        result[name] = mean
        total += objective.weights[i] * mean
    result["loss"] = total
    for j, name in enumerate(stat_names):
        s, n = values[2 * k + 2 * j], values[2 * k + 2 * j + 1]
        result[name] = s / n if n else float("nan")
    return result


def _gather_names(stats: dict, dist: DistInfo) -> list[set]:
    from .distributed import gather_objects

    return gather_objects(set(stats), dist)
