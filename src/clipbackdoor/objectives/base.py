"""The objective interface: a module that maps model outputs to a dict of named losses.

Losses return named terms (``{"clip_loss": ...}``, open_clip's ``output_dict`` idea) so every term is
logged and weighted on its own; ``objectives.composite`` sums them into ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from clipbackdoor.registry import Registry

OBJECTIVES = Registry("objective")


@dataclass
class ModelOutputs:
    """L2-normalised embeddings of one batch (B, D) and the learned scale s = exp(logit_scale).

    ``image_aug`` and ``text_aug`` are the embeddings of the augmented views, present when an active
    term needs them.
    """

    image: torch.Tensor
    text: torch.Tensor
    logit_scale: torch.Tensor
    image_aug: torch.Tensor | None = None
    text_aug: torch.Tensor | None = None


class Objective(Protocol):
    #: whether the term needs the augmented views (``image_aug``, ``text_aug``)
    needs_views: bool

    def __call__(self, out: ModelOutputs) -> dict[str, torch.Tensor]: ...
