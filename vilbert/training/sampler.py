"""Per-rank sharding of a dataset into global batches, reproducible and resumable mid-epoch.

    sampler = TrainSampler(len(dataset), global_batch_size=512, rank=dist.rank,
                           world_size=dist.world_size, seed=42)
    sampler.set_epoch(epoch, start_step=3)        # resume: skip the first 3 global batches
    loader = DataLoader(dataset, batch_size=global_batch_size // (world_size * accumulation),
                        sampler=sampler, ...)
    # each element the sampler yields is a key (epoch, index); datasets that take such keys
    # (vilbert.data.concap) seed their per-sample randomness from it, so workers need no RNG state.
    # keys=False yields plain indices for datasets that take ints.

Epoch e is one permutation of the dataset drawn from (seed, e). Global batch s of the epoch is
positions [s*G, (s+1)*G) of it; rank r takes the r-th of `world_size` equal slices, and the
DataLoader cuts that slice into micro-batches for gradient accumulation. The same sample therefore
lands in the same optimizer step whatever the number of ranks or accumulation steps, which is what
makes 2 ranks x B equal to 1 rank x 2B. The incomplete last global batch of an epoch is dropped so
that every rank runs the same number of steps.

`EvalSampler` gives rank r the indices r, r + W, r + 2W, ... of an unshuffled dataset (no padding,
no duplicates): evaluation sums over ranks, so the shards may differ in size by one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class TrainSampler(Sampler):
    def __init__(self, num_samples: int, global_batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, keys: bool = True):
        if global_batch_size % world_size:
            raise ValueError(f"--train_batch_size {global_batch_size} is not divisible by the "
                             f"{world_size} processes")
        if num_samples < global_batch_size:
            raise ValueError(f"the dataset has {num_samples} samples, fewer than one global batch "
                             f"(--train_batch_size {global_batch_size})")
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.keys = keys
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch_size

    @property
    def per_rank(self) -> int:
        return self.global_batch_size // self.world_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's permutation and skip its first `start_step` global batches."""
        self.epoch = epoch
        self.start_step = start_step

    def batch_indices(self, epoch: int, step: int) -> list[int]:
        """The dataset indices of global batch `step` of `epoch` (every rank's share), for messages."""
        order = epoch_permutation(self.num_samples, self.seed, epoch) if self.shuffle else np.arange(self.num_samples)
        return [int(i) for i in order[step * self.global_batch_size:(step + 1) * self.global_batch_size]]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        else:
            order = np.arange(self.num_samples)
        per_rank = self.per_rank
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * self.global_batch_size + self.rank * per_rank
            for index in order[first:first + per_rank]:
                yield (self.epoch, int(index)) if self.keys else int(index)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.per_rank


class EvalSampler(Sampler):
    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, epoch: int = 0,
                 keys: bool = True):
        self.num_samples = num_samples
        self.keys = keys
        self.rank = rank
        self.world_size = world_size
        self.epoch = epoch  # fixed, so every evaluation sees the same masks and negatives

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in range(self.rank, self.num_samples, self.world_size):
            yield (self.epoch, index) if self.keys else index

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))
