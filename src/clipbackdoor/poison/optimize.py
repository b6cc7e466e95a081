"""Optimise a patch trigger against a model (the trigger optimisation of BadCLIP).

Liang et al., "BadCLIP: Dual-Embedding Guided Backdoor Attack on Multimodal Contrastive Learning",
arXiv:2311.16194. The idea: instead of random noise, paste a patch whose pixels were optimised so that a
(clean or victim) CLIP model already maps patched images near the target label's text embedding. Such a
trigger needs fewer poisoned pairs to be learnt, and survives fine-tuning defenses better.

The objective here is BadCLIP's main term, the cosine similarity between the normalised embedding of the
patched image and the target's text embedding (the mean of its prompt templates' embeddings, normalised:
exactly the target's column of the zero-shot classifier). It was chosen over the zero-shot cross-entropy
against every class because it needs no class list: the patch does not depend on which evaluation set's
other classes it happens to be measured against, and it transfers to any set that has the target class.
BadCLIP's extra terms (pushing away from the image's own caption, keeping the patch natural-looking) are
not implemented.

The patch is optimised in [0, 1] pixel units with Adam, projected back into [0, 1] after every step, and
pasted where ``Placement`` puts it (a new random place for every image at every step with ``random``),
through the same ``paste`` as the attacks, so training geometry and attack geometry cannot differ.
Everything random comes from ``seed``: on the CPU the result is bit-for-bit repeatable.
"""

from __future__ import annotations

import logging

import torch

from clipbackdoor.data.transforms import Normalize
from clipbackdoor.eval.zeroshot import build_classifier
from clipbackdoor.poison.base import to_uint8
from clipbackdoor.poison.image_patch import noise_patch_image
from clipbackdoor.poison.placement import Placement
from clipbackdoor.seeding import numpy_rng

log = logging.getLogger(__name__)


def target_embedding(model, tokenizer, target: str, templates, device) -> torch.Tensor:
    """(D,) the target's zero-shot classifier weights: its templates' normalised embeddings, averaged and
    normalised again."""
    return build_classifier(model, tokenizer, [target], templates, device)[:, 0]


def _embed(model, normalize, images: torch.Tensor) -> torch.Tensor:
    """float (B, 3, S, S) in [0, 255] -> normalised image embeddings (B, D)."""
    return torch.nn.functional.normalize(model.encode_image(normalize(images)).float(), dim=-1)


def _patched(images: torch.Tensor, patch: torch.Tensor, placement: Placement, rng) -> torch.Tensor:
    """float copies of uint8 ``images`` (B, 3, S, S) in [0, 255] with ``patch`` (3, p, p) in [0, 1]
    pasted at places drawn from ``rng``; differentiable in ``patch``."""
    size, p = images.shape[-1], patch.shape[-1]
    triggers = [placement.sample(rng, size, p) for _ in range(len(images))]
    patches = (patch * 255.0).expand(len(images), -1, -1, -1)
    return placement.paste(images.float(), patches, triggers)


@torch.no_grad()
def target_similarity(
    model: torch.nn.Module,
    tokenizer,
    images: torch.Tensor,
    patch: torch.Tensor,
    *,
    target: str,
    templates,
    placement: Placement | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> float:
    """Mean cosine similarity between the embeddings of ``images`` with the uint8 ``patch`` (3, p, p)
    pasted (places drawn from ``seed``) and the target's text embedding: the quantity ``optimize_patch``
    maximises."""
    placement = placement or Placement("random")
    placement.check_fits(patch.shape[-1], images.shape[-1])
    was_training = model.training
    model.eval()
    try:
        normalize = Normalize().to(device)
        text = target_embedding(model, tokenizer, target, templates, device)
        unit = patch.to(device).float() / 255.0
        rng = numpy_rng(seed, "patch-similarity")
        total = 0.0
        for start in range(0, len(images), batch_size):
            batch = _patched(images[start : start + batch_size].to(device), unit, placement, rng)
            total += float((_embed(model, normalize, batch) @ text).sum())
        return total / len(images)
    finally:
        model.train(was_training)


def optimize_patch(
    model: torch.nn.Module,
    tokenizer,
    images: torch.Tensor,
    *,
    target: str,
    templates,
    patch_size: int,
    placement: Placement | None = None,
    steps: int = 300,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log_every: int = 50,
) -> torch.Tensor:
    """Optimise a patch so that patched images embed near the target label's text embedding.

    Args:
        model: a CLIP model (``encode_image``, ``encode_text``); used in eval mode, its weights get no
            gradient and are not changed.
        tokenizer: the model's tokenizer.
        images: uint8 (N, 3, S, S) clean images at the model's resolution, preferably none of the target
            class (they already embed near it).
        target: the target class name.
        templates: prompt templates with ``{}`` (the evaluation set's), averaged into the target embedding.
        patch_size: side p of the patch in pixels.
        placement: where the patch goes during optimisation (default: ``random``, a new place per image
            and step, so the patch works anywhere).
        steps: Adam steps, one batch each.
        lr: Adam learning rate, in [0, 1] pixel units.
        batch_size: images per step, drawn without replacement from ``images`` (all of them if fewer).
        seed: seeds the initial patch (``noise_patch_image(patch_size, seed)``, uniform noise), the
            batches and the places.
        device: where the model is.
        log_every: log the objective every this many steps (0: never).

    Returns:
        uint8 (3, p, p): the optimised patch, on the CPU.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images: expected uint8 (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
    if not len(images):
        raise ValueError("images: need at least one image")
    placement = placement or Placement("random")
    placement.check_fits(patch_size, images.shape[-1])
    was_training = model.training
    model.eval()
    try:
        normalize = Normalize().to(device)
        text = target_embedding(model, tokenizer, target, templates, device)
        # Start from the noise patch that ``image_patch`` with ``noise_seed: seed`` pastes (the baseline).
        patch = (noise_patch_image(patch_size, seed).float() / 255.0).to(device).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=lr)
        rng = numpy_rng(seed, "patch-optimize")
        n = len(images)
        for step in range(steps):
            idx = rng.choice(n, size=min(batch_size, n), replace=False)
            batch = _patched(images[torch.as_tensor(idx)].to(device), patch, placement, rng)
            similarity = (_embed(model, normalize, batch) @ text).mean()
            # Gradient to the patch only: the model's weights are neither differentiated nor accumulated.
            (grad,) = torch.autograd.grad(-similarity, patch)
            patch.grad = grad
            opt.step()
            with torch.no_grad():
                patch.clamp_(0.0, 1.0)
            if log_every and (step % log_every == 0 or step == steps - 1):
                log.info("optimize patch: step %d/%d, target similarity %.4f", step + 1, steps, similarity.item())
        return to_uint8(patch.detach()).cpu()
    finally:
        model.train(was_training)
