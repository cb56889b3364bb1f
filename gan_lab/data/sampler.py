"""The training order: StreamSampler's resumable shuffled passes and Mirrored, its flipped images."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler


class StreamSampler(DistributedSampler):
    """The training data as one endless stream of shuffled passes, positioned by the batches already trained.

    Pass p is a permutation seeded by (seed, p), so the order never depends on the global RNG. Each
    `iter()` continues the stream at `position()` (batches this rank has trained on, the module's d_steps),
    so a resumed run, or a run whose last epoch was cut short, sees exactly the batches an uninterrupted run
    would. With `flip`, index i + len(dataset) means "item i mirrored" (see `Mirrored`), again drawn per
    pass, so flips resume exactly too and need no RNG in worker processes. Subclassing DistributedSampler
    keeps Lightning from wrapping it: it already shards across DDP ranks.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        position: Callable[[], int],
        seed: int = 0,
        flip: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size, self.position, self.flip = batch_size, position, flip
        self.batches_per_pass = self.num_samples // batch_size

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the pass follows from the trained batches, not from Lightning's epoch counter."""

    def pass_indices(self, pass_index: int) -> list[int]:
        """This rank's sample indices of one pass, flips encoded as index + len(dataset)."""
        n = len(self.dataset)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(self.seed + pass_index)
        order = torch.randperm(n, generator=g)[: self.total_size]
        if self.flip:
            order = order + n * torch.randint(0, 2, (n,), generator=g)[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        # Evaluated lazily, when the loader starts the pass: by then every earlier batch has been trained on.
        pass_index, batch_offset = divmod(self.position(), self.batches_per_pass)
        yield from self.pass_indices(pass_index)[batch_offset * self.batch_size :]


class Mirrored(Dataset):
    """`dataset` plus its horizontal mirror images: index i + len(dataset) is item i flipped left-right."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        image, label = self.dataset[index % n]
        return (image.flip(-1) if index >= n else image), label
