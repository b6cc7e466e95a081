"""Datasets, tokenizers, transforms and augmentations. Importing this package registers the datasets and
tokenizers; the augmentations register when ``augment_image``/``augment_text`` are imported."""

from clipbackdoor.data import datasets, eval_datasets, tokenizers, webdataset  # noqa: F401  (registration)
from clipbackdoor.data.errors import DataError
from clipbackdoor.data.registries import DATASETS, EVAL_DATASETS, IMAGE_AUGMENTATIONS, TEXT_AUGMENTATIONS, TOKENIZERS

__all__ = ["DATASETS", "EVAL_DATASETS", "IMAGE_AUGMENTATIONS", "TEXT_AUGMENTATIONS", "TOKENIZERS", "DataError"]
