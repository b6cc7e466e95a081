"""From a pair dataset to training batches: seeded order, on-the-fly poisoning, tokens and caption views.

Every random choice here is derived from (seed, epoch, batch) or (seed, row), never from a running
generator. Resuming mid-epoch therefore only needs the epoch and the batch number, and a run that is
interrupted and resumed sees exactly the batches of one that was not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from clipbackdoor.data.errors import DataError
from clipbackdoor.data.tokenizers import Tokenizer
from clipbackdoor.poison.manifest import Poisoner
from clipbackdoor.seeding import python_rng, torch_generator


class EpochBatchSampler:
    """Index lists of one epoch: a permutation drawn from (seed, epoch), cut into full batches.

    Dropping the last partial batch (as CLIP training does) keeps every contrastive batch the same size.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, drop_last: bool = True) -> None:
        if num_samples < batch_size and drop_last:
            raise DataError(
                f"the dataset has {num_samples} pairs, fewer than one batch of {batch_size} "
                "(lower train.batch_size)"
            )
        self.num_samples, self.batch_size, self.seed, self.drop_last = num_samples, batch_size, seed, drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.num_samples, generator=torch_generator(self.seed, "order", self.epoch))
        for b in range(self.start_batch, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()


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
        # Per row (CleanCLIP computes one EDA view per row once) or per row and epoch.
        key = (self.seed, "eda", index) if self.text_augment_per == "row" else (self.seed, "eda", index, self.epoch)
        try:
            return self.text_augment(caption, python_rng(*key))
        except ValueError as err:
            raise DataError(f"pair {index} ({self.pairs.sample_id(index)}): caption {caption!r}: {err}") from None

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        images, keep = self.pairs.load_images(indices)
        captions = [self.pairs.caption(i) for i in indices]
        if self.poisoner is not None:
            images, captions, poisoned = self.poisoner(indices, images, captions)
        else:
            poisoned = torch.zeros(len(indices), dtype=torch.bool)
        if not bool(keep.all()):
            images, poisoned = images[keep], poisoned[keep]
            indices = [i for i, k in zip(indices, keep.tolist()) if k]
            captions = [c for c, k in zip(captions, keep.tolist()) if k]
        batch = {
            "index": torch.tensor(indices, dtype=torch.long),
            "image": images,
            "text": self.tokenizer(captions),
            "is_poisoned": poisoned,
        }
        if self.text_augment is not None:
            batch["text_aug"] = self.tokenizer([self._augment(i, c) for i, c in zip(indices, captions)])
        return batch


def make_loader(batches: PairBatches, sampler: EpochBatchSampler, num_workers: int) -> DataLoader:
    """A DataLoader whose sampler yields index lists and whose dataset returns assembled batches."""
    return DataLoader(
        batches,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=False,
        # Workers are forked per epoch, after set_epoch, so they see the right epoch.
        multiprocessing_context="fork" if num_workers > 0 else None,
    )
