"""Training objectives. Importing this package registers every term."""

from clipbackdoor.objectives import clip, cyclip, deep_clustering, inmodal, siglip  # noqa: F401  (registration)
from clipbackdoor.objectives.base import (
    OBJECTIVES,
    VIEWS,
    EpochContext,
    Term,
    as_output_dict,
    model_outputs,
)
from clipbackdoor.objectives.composite import WeightedObjective, build_objective

__all__ = ["OBJECTIVES", "VIEWS", "EpochContext", "Term", "WeightedObjective", "as_output_dict", "build_objective",
           "model_outputs"]
