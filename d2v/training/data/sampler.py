"""Deterministic data order: every batch, and every random draw of a step, is a function of
(seed, step) alone, so a resumed run sees exactly what the killed one would have seen.

Dataset items are (index, seed) pairs: the index picks the record, the seed draws its augmentation.
`PretrainBatches` walks an endless stream of seeded epoch permutations; the samples of step s,
micro-batch a, process r are the stream positions ((s * accum + a) * world + r) * B + [0, B).
`EpochBatches` shards one seeded permutation of an epoch over the processes (fine-tuning).
"""

import hashlib
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["EpochBatches", "Example", "PretrainBatches", "derive_seed"]


class Example(NamedTuple):
    x: Tensor
    """(C, H, W) image, (L,) waveform or (T,) token ids."""
    label: int
    """Class index, -1 when unlabelled."""


def derive_seed(*keys: object) -> int:
    """A 63-bit seed from any tuple of ints and strings (stable across runs and machines)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _permutation(n: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class PretrainBatches(torch.utils.data.Sampler):
    """Batches of (index, seed) for steps [start_step, steps), `grad_accum` per step, this process's share."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, start_step: int = 0, grad_accum: int = 1,
                 world_size: int = 1, rank: int = 0):
        if n == 0:
            raise ValueError("no examples to pretrain on")
        self.n, self.batch_size, self.steps, self.seed = n, batch_size, steps, seed
        self.start_step, self.grad_accum, self.world_size, self.rank = start_step, grad_accum, world_size, rank
        self._perm: tuple[int, Tensor] | None = None

    def _index(self, position: int) -> int:
        epoch, j = divmod(position, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, _permutation(self.n, derive_seed(self.seed, "epoch", epoch)))
        return int(self._perm[1][j])

    def batch(self, step: int, micro: int) -> list[tuple[int, int]]:
        start = ((step * self.grad_accum + micro) * self.world_size + self.rank) * self.batch_size
        return [(self._index(p), derive_seed(self.seed, "sample", p)) for p in range(start, start + self.batch_size)]

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            for micro in range(self.grad_accum):
                yield self.batch(step, micro)

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.grad_accum


class EpochBatches(torch.utils.data.Sampler):
    """One epoch of batches for this process. Training shuffles with (seed, epoch) and pads the
    shards to equal length (every process runs the same number of steps); evaluation keeps order
    and does not pad."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, train: bool, world_size: int = 1,
                 rank: int = 0):
        self.n, self.batch_size, self.seed, self.epoch, self.train = n, batch_size, seed, epoch, train
        self.world_size, self.rank = world_size, rank

    def _order(self) -> list[int]:
        if not self.train:
            return list(range(self.n))[self.rank::self.world_size]
        order = _permutation(self.n, derive_seed(self.seed, "epoch", self.epoch)).tolist()
        per_rank = -(-self.n // self.world_size)
        order = (order * self.world_size)[: per_rank * self.world_size]  # pad by wrapping around
        return order[self.rank::self.world_size]

    def __iter__(self):
        order = self._order()
        for i in range(0, len(order), self.batch_size):
            yield [(j, derive_seed(self.seed, "sample", self.epoch, j)) for j in order[i:i + self.batch_size]]

    def __len__(self) -> int:
        return (len(self._order()) + self.batch_size - 1) // self.batch_size
