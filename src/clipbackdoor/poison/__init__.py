"""Attacks and poisoned datasets. Importing this package registers every attack."""

from clipbackdoor.poison import badnet, blended, image_patch, sig, solid, wanet  # noqa: F401  (registration)
from clipbackdoor.poison.base import ATTACKS, Attack
from clipbackdoor.poison.manifest import MANIFEST_NAME, Poisoner, PoisonManifest, create_manifest

__all__ = ["ATTACKS", "Attack", "MANIFEST_NAME", "PoisonManifest", "Poisoner", "create_manifest"]
