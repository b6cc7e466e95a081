"""The objective interface: a term maps the model's whole output and the batch to named losses.

A term is a ``torch.nn.Module`` registered under a short name (``clip``, ``inmodal``, ``siglip``, ...).
It receives

* ``out``: the model's output as a dict, with open_clip's ``output_dict=True`` keys: ``image_features``
  and ``text_features`` (L2-normalised, this rank's rows), ``logit_scale`` (s = exp of the learned
  parameter) and ``logit_bias`` where the model has one; plus ``image_features_aug`` and
  ``text_features_aug``, the embeddings of the augmented views, when a term needs views;
* ``batch``: the training batch (``index``, ``is_poisoned``, ... see ``data.loading``);

and returns ``{"<name>_loss": ..., <other parts to log>}`` (open_clip's ``output_dict`` idea), so every
term is logged and weighted on its own; ``objectives.composite`` sums them into ``loss``.

A term declares what it needs in ``needs`` ("views": the augmented views are made and embedded), may hold
parameters of its own (SigLIP's learnable bias, a clustering head: they are trained with weight decay 0
and saved in the training state), and may prepare itself at the start of every epoch
(``start_epoch``, e.g. to recompute pseudo-labels). Terms compute the loss of the *global* batch on
every rank (``objectives.distributed.gather_features``), so a term's own parameters get the same
gradient on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from clipbackdoor.registry import Registry

OBJECTIVES = Registry("objective")

#: What a term may need besides the model's output for the original images and captions.
VIEWS = "views"


class Term(torch.nn.Module):
    """Base class of objective terms: override ``forward``; ``needs`` and ``start_epoch`` as required."""

    #: what the term needs made for it (``VIEWS``: augmented image and caption views)
    needs: frozenset[str] = frozenset()

    def start_epoch(self, epoch: EpochContext) -> None:
        """Called on every rank at the start of every epoch (not when a run resumes inside one)."""

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, Any] | None = None
                ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass
class EpochContext:
    """What the training loop offers a term at the start of an epoch.

    ``embed_images()`` returns the L2-normalised embeddings of the training images (original views, with
    their triggers, no gradient) of every rank, the same (N, D) tensor on every rank, with the dataset
    rows they came from (N,). ``reset_optimizer_state(params)`` gives ``params`` fresh AdamW moments (a
    re-initialised head must not inherit the old head's). ``generator`` is seeded by the run's seed and the
    epoch, the same on every rank.
    """

    epoch: int
    device: torch.device
    generator: torch.Generator
    embed_images: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    reset_optimizer_state: Callable[[list[torch.nn.Parameter]], None]


def model_outputs(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                  image_aug: torch.Tensor | None = None, text_aug: torch.Tensor | None = None,
                  **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output dict terms receive (for tests and for code that holds the embeddings already)."""
    out = {"image_features": image, "text_features": text, "logit_scale": logit_scale, **extra}
    if image_aug is not None:
        out["image_features_aug"] = image_aug
    if text_aug is not None:
        out["text_features_aug"] = text_aug
    return out


def as_output_dict(result: Any) -> dict[str, torch.Tensor]:
    """An open_clip CLIP's forward result as a dict: models built with ``output_dict=True`` return one
    already; the others return ``(image_features, text_features, logit_scale[, logit_bias])``."""
    if isinstance(result, Mapping):
        return dict(result)
    keys = ("image_features", "text_features", "logit_scale", "logit_bias")
    return dict(zip(keys, result))


def view_features(out: Mapping[str, torch.Tensor], term: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented views' embeddings, or a clear error where the loop was not asked to make them."""
    if "image_features_aug" not in out or "text_features_aug" not in out:
        raise ValueError(f"the {term} objective needs augmented image and text views")
    return out["image_features_aug"], out["text_features_aug"]
