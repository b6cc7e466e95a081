"""Zero-shot accuracy and attack success rate in one pass over the evaluation images.

For every batch, the clean images and their triggered copies are encoded together and scored against the
same class embeddings. Triggers (placement, noise) for every image and draw come from ``seed`` and are
fixed when the evaluator is built, so ASR is repeatable across epochs and runs; several draws give a mean
and a spread. ASR counts only images whose true class is not the target.
"""

from __future__ import annotations

from typing import Any

import torch

from clipbackdoor.data.transforms import Normalize
from clipbackdoor.distributed import SINGLE, DistContext, all_reduce_sum
from clipbackdoor.eval.metrics import asr_mask, attack_hits, find_target, topk_hits
from clipbackdoor.eval.zeroshot import build_classifier
from clipbackdoor.registry import ConfigError
from clipbackdoor.seeding import numpy_rng


class Evaluator:
    """Args:
    dataset: a ``ClassificationDataset``.
    tokenizer: the model's tokenizer.
    attack: the trigger to measure (``None`` measures clean accuracy only).
    seed: seed of the frozen trigger draws.
    draws: number of independent trigger draws per image.
    """

    def __init__(
        self,
        dataset,
        tokenizer,
        attack=None,
        *,
        seed: int = 1234,
        draws: int = 1,
        batch_size: int = 500,
        max_images: int | None = None,
        device: torch.device | str = "cpu",
        ctx: DistContext = SINGLE,
    ) -> None:
        self.dataset, self.tokenizer, self.attack = dataset, tokenizer, attack
        self.batch_size, self.device, self.ctx = batch_size, torch.device(device), ctx
        n = len(dataset) if max_images is None else min(max_images, len(dataset))
        self.indices = list(range(n))
        # In a torchrun job each rank scores a contiguous shard and the counts are summed.
        self.shard = range(n)[n * ctx.rank // ctx.world_size : n * (ctx.rank + 1) // ctx.world_size]
        self.labels = dataset.labels[:n]
        self.normalize = Normalize().to(self.device)
        self.target = None
        self.triggers: list[list[dict[str, Any]]] = []
        if attack is not None:
            try:
                self.target = find_target(dataset.classnames, attack.target)
            except ValueError as err:
                raise ConfigError(str(err)) from None
            size = dataset.image_size
            self.triggers = [
                [attack.sample_trigger(numpy_rng(seed, "asr", d, i), size) for i in self.indices]
                for d in range(draws)
            ]

    def _encode(self, model, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images.to(self.device))
        return torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            return self._run(model)
        finally:
            model.train(was_training)

    def _run(self, model) -> dict[str, float]:
        weights = build_classifier(
            model, self.tokenizer, self.dataset.classnames, self.dataset.templates, self.device
        )
        top1 = top5 = 0
        draws = len(self.triggers)
        asr1 = torch.zeros(draws, dtype=torch.float64)
        asr5 = torch.zeros(draws, dtype=torch.float64)
        false_target = 0
        counted = 0
        for start in range(self.shard.start, self.shard.stop, self.batch_size):
            idx = self.indices[start : min(start + self.batch_size, self.shard.stop)]
            labels = self.labels[start : start + len(idx)].to(self.device)
            images = self.dataset.load_images(idx)
            logits = self._encode(model, images) @ weights
            top1 += int(topk_hits(logits, labels, 1).sum())
            top5 += int(topk_hits(logits, labels, 5).sum())
            if self.target is None:
                continue
            keep = asr_mask(labels, self.target)
            rows = keep.nonzero().flatten().cpu()
            counted += len(rows)
            false_target += int(attack_hits(logits[keep], self.target, 1).sum())
            if not len(rows):
                continue
            for d in range(draws):
                trig = [self.triggers[d][start + int(r)] for r in rows]
                triggered = self.attack.apply(images[rows], trig)
                t_logits = self._encode(model, triggered) @ weights
                asr1[d] += int(attack_hits(t_logits, self.target, 1).sum())
                asr5[d] += int(attack_hits(t_logits, self.target, 5).sum())
        counts = torch.cat([torch.tensor([top1, top5, false_target, counted], dtype=torch.float64), asr1, asr5])
        counts = all_reduce_sum(counts, self.ctx, self.device)
        top1, top5, false_target, counted = (int(c) for c in counts[:4])
        asr1, asr5 = counts[4 : 4 + draws], counts[4 + draws :]
        n = len(self.indices)
        # The class count gives chance accuracy (1 / classes), which reports draw without the data at hand.
        metrics = {"zeroshot_top1": top1 / n, "zeroshot_top5": top5 / n, "eval_images": n,
                   "eval_classes": len(self.dataset.classnames)}
        if self.target is not None and counted:
            rates = asr1 / counted
            metrics.update(
                asr_top1=float(rates.mean()),
                asr_top5=float((asr5 / counted).mean()),
                # The backdoor's baseline: how often a clean non-target image is already called the target.
                clean_target_rate=false_target / counted,
                asr_images=counted,
            )
            if draws > 1:
                metrics["asr_top1_std"] = float(rates.std(unbiased=True))
        return metrics
