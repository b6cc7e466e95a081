"""Defenses. Importing this package registers every defense."""

from clipbackdoor.defenses import cleanclip, deep_clustering, heavy_l2, mmcl, shrink_perturb, ssl  # noqa: F401  (registration)
from clipbackdoor.defenses.base import DEFENSES, Defense, StartContext, apply_defense, owned_settings

__all__ = ["DEFENSES", "Defense", "StartContext", "apply_defense", "owned_settings"]
