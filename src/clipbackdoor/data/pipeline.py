"""From a pair dataset to training batches: seeded order, on-the-fly poisoning, tokens and caption views.

Every random choice here is derived from (seed, epoch, batch) or (seed, row), never from a running
generator. Resuming mid-epoch therefore only needs the epoch and the batch number, and a run that is
interrupted and resumed sees exactly the batches of one that was not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from clipbackdoor.data.errors import DataError
from clipbackdoor.data.tokenizers import Tokenizer
from clipbackdoor.poison.manifest import Poisoner
from clipbackdoor.seeding import python_rng, torch_generator


def check_global_batch(num_samples: int, batch_size: int, world_size: int, drop_last: bool = True) -> None:
    """The global batch must fit the data at least once (when partial batches are dropped) and split
    evenly over the processes of the job; every training loader checks this."""
    if num_samples < batch_size and drop_last:
        raise DataError(
            f"the dataset has {num_samples} pairs, fewer than one batch of {batch_size} (lower train.batch_size)"
        )
    if batch_size % world_size:
        raise DataError(
            f"train.batch_size {batch_size} (the global batch) is not divisible by the {world_size} "
            "processes of this job"
        )


class EpochBatchSampler:
    """Index lists of one epoch: a permutation drawn from (seed, epoch), cut into full global batches, of
    which each rank takes its contiguous slice.

    The permutation depends only on the seed and the epoch, never on the number of ranks, so a job on W
    processes sees exactly the global batches of a single-process run (rank r holds rows
    ``r*B/W .. (r+1)*B/W`` of each), and its gathered embeddings are in the same order. Dropping the last
    partial batch (as CLIP training does) keeps every contrastive batch the same size.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, drop_last: bool = True, *,
                 rank: int = 0, world_size: int = 1) -> None:
        check_global_batch(num_samples, batch_size, world_size, drop_last)
        self.num_samples, self.batch_size, self.seed, self.drop_last = num_samples, batch_size, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.num_samples, generator=torch_generator(self.seed, "order", self.epoch))
        local = self.batch_size // self.world_size
        for b in range(self.start_batch, len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:
                # A last partial batch (drop_last=False) is split as evenly as the ranks allow.
                batch = batch.tensor_split(self.world_size)[self.rank] if len(batch) < self.batch_size else \
                    batch[self.rank * local : (self.rank + 1) * local]
            yield batch.tolist()


class PairBatches:
    """Map-style dataset whose items are whole batches: ``batches[list_of_indices] -> dict``.

    The returned dict holds ``index`` (B,), ``image`` uint8 (B, 3, S, S), ``text`` (B, L), ``is_poisoned``
    (B,), and with a text augmentation ``text_aug`` (B, L). Image views are made later, batched, on the
    training device.
    """

    def __init__(
        self,
        pairs,
        tokenizer: Tokenizer,
        *,
        seed: int,
        poisoner: Poisoner | None = None,
        text_augment=None,
        text_augment_per: str = "row",
    ) -> None:
        self.pairs, self.tokenizer, self.seed = pairs, tokenizer, seed
        self.poisoner, self.text_augment, self.text_augment_per = poisoner, text_augment, text_augment_per
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _augment(self, index: int, caption: str) -> str:
        return caption_view(self.text_augment, self.pairs, index, caption, seed=self.seed, epoch=self.epoch,
                            per=self.text_augment_per)

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        images, keep = self.pairs.load_images(indices)
        captions = [self.pairs.caption(i) for i in indices]
        dropped = int((~keep).sum())
        if dropped:
            images = images[keep]
            indices = [i for i, k in zip(indices, keep.tolist()) if k]
            captions = [c for c, k in zip(captions, keep.tolist()) if k]
        return assemble_batch(indices, images, captions, dropped, self.poisoner, self.tokenizer,
                              self._augment if self.text_augment is not None else None)


def caption_view(text_augment, pairs, index: int, caption: str, *, seed: int, epoch: int, per: str) -> str:
    """The augmented view of one caption, seeded per row (CleanCLIP computes one EDA view per row, once)
    or, with ``per="epoch"``, per row and epoch; a caption it cannot augment raises DataError naming it."""
    key = (seed, "eda", index) if per == "row" else (seed, "eda", index, epoch)
    try:
        return text_augment(caption, python_rng(*key))
    except ValueError as err:
        raise DataError(f"pair {index} ({pairs.sample_id(index)}): caption {caption[:200]!r}: {err}") from None


def assemble_batch(indices, images, captions, dropped, poisoner, tokenizer, augment) -> dict[str, Any]:
    """The batch dict of ``data.loading`` from readable rows: poisoned captions, tokens, caption views.

    Trigger pixels are not applied here; ``triggers`` carries them to the training device.
    """
    if poisoner is not None:
        captions, poisoned, triggers = poisoner.mark(indices, captions)
    else:
        poisoned, triggers = torch.zeros(len(indices), dtype=torch.bool), []
    batch = {
        "index": torch.tensor(indices, dtype=torch.long),
        "image": images,
        "text": tokenizer(captions),
        "is_poisoned": poisoned,
        "triggers": triggers,
        "dropped": dropped,
    }
    if augment is not None:
        batch["text_aug"] = tokenizer([augment(i, c) for i, c in zip(indices, captions)])
    return batch
