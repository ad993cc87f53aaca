"""DataLoaders of a training run: one per dataset for the whole run (so worker processes
persist across epochs, with their chip caches), each sample drawn as ``(epoch, index)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class EpochSampler:
    """The samples of one epoch as ``(epoch, index)`` keys (a torch ``Sampler``).

    With ``shuffle`` the order is the permutation torch's ``RandomSampler`` draws from a
    generator seeded with ``seed * 100003 + epoch`` inside a ``DataLoader`` (which takes one
    int64 from it first for its workers' base seed), so runs keep the sampling order they had
    with a DataLoader made per epoch. The epoch is part of each key, so a persistent worker
    augments for the right epoch without being told (:meth:`ChipDataset.__getitem__`).
    """

    def __init__(self, size: int, shuffle: bool, seed: int) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration."""
        self.epoch = epoch

    def order(self) -> list[int]:
        """Dataset indices of the current epoch, in order."""
        import torch

        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader's draw
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self.order()])

    def __len__(self) -> int:
        return self.size


def make_loader(dataset: Any, batch_size: int, shuffle: bool, seed: int, workers: int,
                pin: bool) -> Any:
    """A DataLoader over ``dataset`` with an :class:`EpochSampler` (``loader.sampler``);
    ``workers`` > 0 start once and persist across epochs (torch sets one thread in each)."""
    import torch

    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), shuffle, seed),
        num_workers=workers, pin_memory=pin, drop_last=False,
        persistent_workers=workers > 0)
