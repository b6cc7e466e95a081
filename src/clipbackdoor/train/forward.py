"""The training forward pass, and the embedding pass over a whole dataset that epoch hooks ask for."""

from __future__ import annotations

from typing import Any

import torch

from clipbackdoor.distributed import DistContext
from clipbackdoor.objectives import VIEWS, as_output_dict
from clipbackdoor.objectives.distributed import gather_features


def forward_batch(model, batch, objective, normalize, image_augment, generator, device, poisoner=None,
                  view_rows: tuple[int, int] | None = None, precision: str = "fp32",
                  channels_last: bool = False) -> dict[str, torch.Tensor]:
    """One forward pass over [originals; views] (as CleanCLIP does: a single pass of 2B images and texts).

    Triggers go onto the poisoned rows here, on the device, before the views are made from them.
    ``view_rows`` = (first row, global batch size) places this rank's rows in the global batch, so the
    image views drawn from ``generator`` are those a single process would draw for the same rows. The
    model runs under bf16 autocast when asked; the losses are always computed in fp32, since bf16 logits
    of a contrastive batch at scale 100 would be off by whole units.
    """
    images = batch_images(batch, device, poisoner)
    texts = batch["text"].to(device, non_blocking=True)
    n = len(images)
    views = VIEWS in objective.needs
    if views:
        images = torch.cat([images, image_augment(images, generator, rows=view_rows)])
        texts = torch.cat([texts, batch["text_aug"].to(device, non_blocking=True)])
    pixels = normalize(images)
    if channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        result = as_output_dict(model(pixels, texts))
    out = {key: value.float() for key, value in result.items()}
    for key in ("image_features", "text_features"):
        if views:
            out[f"{key}_aug"] = out[key][n:]
        out[key] = out[key][:n]
    return objective(out, batch)


def batch_images(batch: dict[str, Any], device: torch.device, poisoner=None) -> torch.Tensor:
    """A batch's images on ``device``, with the triggers of its poisoned rows."""
    images = batch["image"].to(device, non_blocking=True)
    if poisoner is not None and batch["triggers"]:
        images = poisoner.apply(images, batch["is_poisoned"], batch["triggers"])
    return images


@torch.no_grad()
def embed_images(model, loader, normalize, device: torch.device, poisoner, ctx: DistContext,
                 precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised embeddings of every batch of ``loader`` (original views, triggers applied, the model in
    eval mode so that batch norm's statistics stay as they are) and their dataset rows, gathered rank-major
    over ``ctx``'s ranks: the same (N, D) and (N,) tensors on every rank."""
    was_training = model.training
    model.eval()
    features, rows = [], []
    try:
        for batch in loader:
            pixels = normalize(batch_images(batch, device, poisoner))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                u = model.encode_image(pixels, normalize=True)
            features.append(u.float())
            rows.append(batch["index"].to(device))
    finally:
        model.train(was_training)
    u, index = torch.cat(features), torch.cat(rows)
    return gather_features(u, ctx.rank, ctx.world_size), gather_features(index, ctx.rank, ctx.world_size)
