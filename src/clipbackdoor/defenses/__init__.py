"""Defenses. Importing this package registers every defense."""

from clipbackdoor.defenses import cleanclip, mmcl, ssl  # noqa: F401  (registration)
from clipbackdoor.defenses.base import DEFENSES, apply_defense

__all__ = ["DEFENSES", "apply_defense"]
