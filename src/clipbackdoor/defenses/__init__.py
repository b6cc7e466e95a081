"""Defenses. Importing this package registers every defense."""

from clipbackdoor.defenses import cleanclip, mmcl, ssl  # noqa: F401  (registration)
from clipbackdoor.defenses.base import DEFENSES, Defense, StartContext, apply_defense, owned_keys

__all__ = ["DEFENSES", "Defense", "StartContext", "apply_defense", "owned_keys"]
