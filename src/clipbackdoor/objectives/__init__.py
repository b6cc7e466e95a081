"""Training objectives. Importing this package registers every term."""

from clipbackdoor.objectives import clip, inmodal  # noqa: F401  (registration)
from clipbackdoor.objectives.base import OBJECTIVES, ModelOutputs
from clipbackdoor.objectives.composite import WeightedObjective, build_objective

__all__ = ["OBJECTIVES", "ModelOutputs", "WeightedObjective", "build_objective"]
