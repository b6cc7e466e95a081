"""Held-out clean validation loss: the model-selection signal a real defender has.

A defender cleaning a model owns clean image-caption pairs but neither the trigger nor labelled test
images, so the paper's oracle rule (best test accuracy at low ASR) is out of reach. What it can compute is
the CLIP loss on clean pairs it held out of its cleaning set. ``ValidationLoss`` evaluates that loss on
fixed batches, without views or augmentation, so values from runs with different training batch sizes,
objectives and learning rates are comparable.
"""

from __future__ import annotations

import torch

from clipbackdoor.data.errors import DataError
from clipbackdoor.data.transforms import Normalize
from clipbackdoor.distributed import SINGLE, DistContext, all_reduce_sum
from clipbackdoor.objectives.clip import info_nce


class ValidationLoss:
    """Mean symmetric InfoNCE over consecutive fixed batches of ``pairs`` (the last partial batch dropped,
    since the loss of a smaller batch has a different scale)."""

    def __init__(self, pairs, tokenizer, *, batch_size: int = 500, device: torch.device | str = "cpu",
                 ctx: DistContext = SINGLE) -> None:
        self.ctx = ctx
        n = len(pairs)
        if n == 0:
            raise DataError("data.validation: the validation set holds no pairs")
        self.batch_size = min(batch_size, n)
        self.device = torch.device(device)
        self.normalize = Normalize().to(self.device)
        self.batches = []
        for start in range(0, n - self.batch_size + 1, self.batch_size):
            idx = list(range(start, start + self.batch_size))
            images, ok = pairs.load_images(idx)
            keep = [i for i, good in zip(idx, ok.tolist()) if good]
            if len(keep) < 2:  # a contrastive loss needs at least one negative
                continue
            texts = tokenizer([pairs.caption(i) for i in keep])
            self.batches.append((images[ok], texts))
        if not self.batches:
            raise DataError(f"data.validation: no batch of {self.batch_size} readable pairs among {n}")

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> float:
        was_training = model.training
        model.eval()
        try:
            total = 0.0
            # Ranks share the fixed batches out and sum their losses.
            for images, texts in self.batches[self.ctx.rank :: self.ctx.world_size]:
                u, v, scale = model(self.normalize(images.to(self.device)), texts.to(self.device))[:3]
                total += float(0.5 * (info_nce(u.float(), v.float(), scale) + info_nce(v.float(), u.float(), scale)))
            total = float(all_reduce_sum(torch.tensor([total], dtype=torch.float64), self.ctx, self.device)[0])
            return total / len(self.batches)
        finally:
            model.train(was_training)
