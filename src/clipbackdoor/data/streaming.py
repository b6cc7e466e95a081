"""Training batches streamed from tar shards (``webdataset`` pairs), behind the ``TrainLoader`` interface.

Each epoch the shards are put in an order drawn from (seed, epoch) and dealt round-robin to the (rank,
worker) slots of the job; every loader worker reads its shards sequentially, passes the samples through a
seeded shuffle buffer and cuts them into this rank's share of each global batch. The loader's workers are
interleaved in a fixed round-robin order, so the same seed, ``data.num_workers`` and world size give the
same batches. Unlike map-style data, the order depends on ``data.num_workers``: the workers' shard slots
are part of it.

A rank yields ``len(pairs) // batch_size`` batches every epoch, the same count on every rank, as DDP
needs. A worker whose shards run out before it has produced its batches reads them again (a new shuffle
of the same shards), which is what open_clip's ``--dataset-resampled`` amounts to; when the shards all hold
the same number of samples and that number divides evenly into the slots and batches, every sample is
seen exactly once per epoch.

Resuming at batch k of an epoch re-reads the samples of the first k batches from the shards but neither
decodes nor trains on them.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from clipbackdoor.data.errors import DataError
from clipbackdoor.data.pipeline import assemble_batch, caption_view, check_global_batch
from clipbackdoor.data.webdataset import decode_image
from clipbackdoor.seeding import python_rng, torch_generator

log = logging.getLogger(__name__)


def shuffled(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """A shuffle buffer of ``size`` items (at most one behind with ``size`` <= 1): each new item takes the
    place of a random one, which is yielded; the rest come out shuffled at the end."""
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= max(size, 1):
            j = rng.randrange(len(buffer))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class ShardStream(IterableDataset):
    """One rank's batches of one epoch; each loader worker produces every ``workers``-th of them.

    Batch b of the epoch comes from logical worker ``b % workers``. Loader worker i plays logical worker
    ``(i + start_batch) % workers``, so that the DataLoader, which asks its workers in turn starting from
    worker 0, returns batch ``start_batch`` first and the rest in order.
    """

    def __init__(self, pairs, *, tokenizer, seed: int, local_batch: int, num_batches: int, workers: int,
                 rank: int, world_size: int, poisoner=None, text_augment=None, text_augment_per: str = "row") -> None:
        super().__init__()
        self.pairs, self.tokenizer, self.seed = pairs, tokenizer, seed
        self.local_batch, self.num_batches, self.workers = local_batch, num_batches, workers
        self.rank, self.world_size = rank, world_size
        self.poisoner, self.text_augment, self.text_augment_per = poisoner, text_augment, text_augment_per
        # Shards without a usable sample are never dealt: a slot holding only those could yield nothing.
        self.shards = [s for s in range(len(pairs.shards)) if len(pairs.shard_range(s))]
        self.epoch = 0
        self.start_batch = 0

    def shards_of(self, worker: int) -> list[int]:
        """The shards logical ``worker`` of this rank reads this epoch, in reading order."""
        order = torch.randperm(len(self.shards), generator=torch_generator(self.seed, "shard-order", self.epoch))
        slot, slots = self.rank * self.workers + worker, self.world_size * self.workers
        return [self.shards[k] for k in order[slot::slots].tolist()]

    def samples(self, worker: int) -> Iterator[tuple[int, bytes]]:
        """(index, image bytes) of the worker's shards, shuffled, pass after pass without end."""
        shards = self.shards_of(worker)
        for repeat in itertools.count():
            rng = python_rng(self.seed, "shuffle", self.epoch, self.rank, worker, repeat)
            stream = itertools.chain.from_iterable(self.pairs.stream_shard(s) for s in shards)
            count = 0
            for item in shuffled(stream, self.pairs.shuffle_buffer, rng):
                count += 1
                yield item
            if not count:
                names = ", ".join(str(self.pairs.shards[s]) for s in shards)
                raise DataError(f"no readable samples in the shard(s) {names}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = ((info.id if info is not None else 0) + self.start_batch) % self.workers
        samples = self.samples(worker)
        try:
            for b in range(worker, self.num_batches, self.workers):
                rows = list(itertools.islice(samples, self.local_batch))
                if b >= self.start_batch:
                    yield self.assemble(rows)
        finally:
            samples.close()

    def assemble(self, rows: list[tuple[int, bytes]]) -> dict[str, Any]:
        """Decode the rows' images and build the batch dict; unreadable ones raise or are dropped."""
        size = self.pairs.image_size
        images = torch.empty(len(rows), 3, size, size, dtype=torch.uint8)
        indices = []
        for index, data in rows:
            try:
                images[len(indices)] = decode_image(data, size, self.pairs.where(index))
            except DataError as err:
                if self.pairs.on_error == "raise":
                    raise
                log.warning("skipping: %s", err)
                continue
            indices.append(index)
        dropped = len(rows) - len(indices)
        augment = None
        if self.text_augment is not None:
            augment = partial(caption_view, self.text_augment, self.pairs, seed=self.seed, epoch=self.epoch,
                              per=self.text_augment_per)
        captions = [self.pairs.caption(i) for i in indices]
        return assemble_batch(indices, images[: len(indices)], captions, dropped, self.poisoner, self.tokenizer,
                              augment)


class StreamLoader:
    """A streaming pair dataset (``pairs.streaming``) as a ``TrainLoader`` (see ``data.loading``).

    Args:
        pairs: the dataset; it provides ``shards``, ``shard_range(s)``, ``stream_shard(s)``, ``where(i)``,
            ``shuffle_buffer``, ``on_error`` and ``image_size`` (``data.webdataset.WebDatasetPairs``).
        tokenizer: captions -> token ids (B, L).
        seed: data seed; the shard order, the shuffle buffers and the caption views derive from it.
        batch_size: the global batch; this rank yields ``batch_size // world_size`` rows a batch.
        num_workers: loader worker processes; each reads its own shards, so there must be at least
            ``world_size * max(num_workers, 1)`` shards holding usable samples.
    """

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
        check_global_batch(len(pairs), batch_size, world_size)
        workers = max(num_workers, 1)
        self.stream = ShardStream(
            pairs, tokenizer=tokenizer, seed=seed, local_batch=batch_size // world_size,
            num_batches=len(pairs) // batch_size, workers=workers, rank=rank, world_size=world_size,
            poisoner=poisoner, text_augment=text_augment, text_augment_per=text_augment_per,
        )
        if len(self.stream.shards) < world_size * workers:
            raise DataError(
                f"{len(self.stream.shards)} shard(s) with usable samples for {world_size} process(es) x "
                f"{workers} loader worker(s): each worker reads whole shards, so re-shard the data into at "
                f"least {world_size * workers} shards or lower data.num_workers"
            )
        self.loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=False,
            # Workers are forked per epoch, after set_epoch, so they see the right epoch and start batch.
            multiprocessing_context="fork" if num_workers > 0 else None,
        )

    def __len__(self) -> int:
        return self.stream.num_batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.stream.epoch, self.stream.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)
