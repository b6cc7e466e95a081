"""Registries of the data subpackage: datasets, tokenizers and the two augmentation families."""

from clipbackdoor.registry import Registry

# Image-caption pair datasets (pre-training and cleaning data).
DATASETS = Registry("dataset")
# Labelled image datasets for zero-shot accuracy and ASR.
EVAL_DATASETS = Registry("evaluation dataset")
TOKENIZERS = Registry("tokenizer")
IMAGE_AUGMENTATIONS = Registry("image augmentation")
TEXT_AUGMENTATIONS = Registry("text augmentation")
