"""Training batches for one rank, from an indexable or a streaming pair dataset, behind one interface.

The training loop only sees a ``TrainLoader``: ``len()`` batches per epoch (the same on every rank, as DDP
needs), ``set_epoch(epoch, start_batch)`` to (re)position it, and iteration over batch dicts of this rank's
share of each global batch:

    ``index`` int64 (b,), ``image`` uint8 (b, 3, S, S) without triggers, ``text`` (b, L), ``is_poisoned``
    bool (b,), ``triggers`` (the manifest's trigger parameters of the poisoned rows, in row order),
    ``text_aug`` (b, L) when a term needs caption views, and ``dropped`` (rows lost to unreadable images).

Triggers are applied later, on the training device and in batch (``Poisoner.apply``), so the loader
workers only decode and tokenize. An indexable dataset (``csv``, ``synthetic``) goes through a seeded
batch sampler and ``PairBatches``; a dataset with ``streaming = True`` (``webdataset``) through
``data.streaming.StreamLoader``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from torch.utils.data import DataLoader

from clipbackdoor.data.pipeline import EpochBatchSampler, PairBatches
from clipbackdoor.seeding import derive_seed


class TrainLoader(Protocol):
    def __len__(self) -> int:
        """Batches per epoch on each rank."""

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Position the next iteration at batch ``start_batch`` of ``epoch`` (0-based)."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


class MapLoader:
    """An indexable dataset: a seeded global permutation, cut into global batches, sliced per rank."""

    def __init__(
        self,
        pairs,
        *,
        tokenizer,
        seed: int,
        batch_size: int,
        poisoner=None,
        text_augment=None,
        text_augment_per: str = "row",
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
    ) -> None:
        self.batches = PairBatches(pairs, tokenizer, seed=seed, poisoner=poisoner, text_augment=text_augment,
                                   text_augment_per=text_augment_per)
        # The order's seed is derived from the data seed, as it always was, so results stay comparable.
        self.sampler = EpochBatchSampler(len(pairs), batch_size, seed=derive_seed(seed, "data"), rank=rank,
                                         world_size=world_size)
        self.loader = DataLoader(
            self.batches,
            sampler=self.sampler,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=False,
            # Workers are forked per epoch, after set_epoch, so they see the right epoch.
            multiprocessing_context="fork" if num_workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)


def build_train_loader(pairs, **kwargs: Any) -> TrainLoader:
    """The loader for ``pairs``; ``kwargs`` are those of ``MapLoader`` (``batch_size`` is the global batch)."""
    if getattr(pairs, "streaming", False):
        from clipbackdoor.data.streaming import StreamLoader

        return StreamLoader(pairs, **kwargs)
    return MapLoader(pairs, **kwargs)


def build_pass_loader(pairs, *, tokenizer, seed: int, batch_size: int, poisoner=None, num_workers: int = 0,
                      rank: int = 0, world_size: int = 1, pin_memory: bool = False):
    """One pass over every row of an indexable dataset in row order, without drop_last or shuffling: this
    rank's contiguous share of the rows, ``batch_size`` rows a batch (what embedding the whole training set
    needs, e.g. for clustering). None for a streaming dataset, which has no rows to share out."""
    if getattr(pairs, "streaming", False):
        return None
    n = len(pairs)
    per = -(-n // world_size)
    mine = list(range(rank * per, min(n, (rank + 1) * per)))
    chunks = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    batches = PairBatches(pairs, tokenizer, seed=seed, poisoner=poisoner)
    return DataLoader(batches, sampler=chunks, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      multiprocessing_context="fork" if num_workers > 0 else None)
