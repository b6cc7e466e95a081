"""Run directories and the assembly of a run's components from its config.

A run directory is the unit that every later stage reads: ``config.yaml`` (resolved, written first),
``metrics.jsonl``, ``checkpoints/``, ``poison_manifest.json`` (and its picture, ``trigger_gallery.png``)
where the training data were poisoned, and ``summary.json`` once the run is complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from clipbackdoor.config import ExperimentConfig
from clipbackdoor.data import registries
from clipbackdoor.data.errors import DataError
from clipbackdoor.models import create_model
from clipbackdoor.poison import ATTACKS, Poisoner, PoisonManifest, create_manifest
from clipbackdoor.poison.gallery import write_gallery
from clipbackdoor.rundir import RunDir

log = logging.getLogger(__name__)



@dataclass
class Components:
    model: torch.nn.Module
    tokenizer: Any
    pairs: Any
    eval_set: Any
    attack: Any
    poisoner: Poisoner | None
    text_augment: Any
    image_augment: Any
    validation: Any = None


def build_eval_parts(cfg: ExperimentConfig, device: torch.device):
    """Model, tokenizer, evaluation set and attack: what evaluating a checkpoint needs."""
    bundle = create_model(**cfg.model)
    extra = {"image_size": bundle.image_size, "experiment_seed": cfg.seed}
    eval_set = registries.EVAL_DATASETS.build(cfg.data.eval, "data.eval", **extra)
    attack = ATTACKS.build(cfg.attack, "attack", default_templates=eval_set.templates)
    return bundle.model.to(device), bundle.tokenizer, eval_set, attack, extra


def build_poisoner(cfg: ExperimentConfig, pairs, attack, run: RunDir | None) -> Poisoner | None:
    """Reuse ``poison.manifest``, or draw a new manifest from the budget; write it into the run."""
    if cfg.poison.manifest:
        manifest = PoisonManifest.read(cfg.poison.manifest)
        poisoner = Poisoner(manifest)
        poisoner.check_dataset(pairs)
    elif cfg.poison.budget > 0:
        seed = cfg.seed if cfg.poison.seed is None else cfg.poison.seed
        manifest = create_manifest(pairs, attack, cfg.poison.budget, seed)
        poisoner = Poisoner(manifest, attack)
    else:
        return None
    if run is not None:
        manifest.write(run.manifest)
        _write_gallery(pairs, poisoner, run)
    log.info("poisoned %d of %d training pairs", len(manifest.samples), len(pairs))
    return poisoner


def _write_gallery(pairs, poisoner: Poisoner, run: RunDir) -> None:
    """A picture of the triggers (``trigger_gallery.png``, a few images); a figure is no reason to fail a run."""
    try:
        write_gallery(pairs, poisoner, run.gallery)
    except (DataError, OSError) as err:
        log.warning("trigger gallery not written: %s", err)


def check_components(cfg: ExperimentConfig) -> None:
    """Every component section of ``cfg`` checked against its registry (names, keys) without building one:
    what a sweep runs over each of its runs before the first starts, so a typo stops it at once."""
    from clipbackdoor.data import augment_image, augment_text  # noqa: F401  (registration)
    from clipbackdoor.models.factory import check_model_section
    from clipbackdoor.objectives import build_objective
    from clipbackdoor.train.loggers import check_names

    check_model_section(cfg.model)
    sections = [
        (registries.DATASETS, cfg.data.train, "data.train"),
        (registries.EVAL_DATASETS, cfg.data.eval, "data.eval"),
        (registries.TEXT_AUGMENTATIONS, cfg.data.text_augment, "data.text_augment"),
        (registries.IMAGE_AUGMENTATIONS, cfg.data.image_augment, "data.image_augment"),
        (ATTACKS, cfg.attack, "attack"),
    ]
    if cfg.data.validation:
        sections.append((registries.DATASETS, cfg.data.validation, "data.validation"))
    for registry, section, where in sections:
        registry.check(section, where)
    build_objective(cfg.objective)
    check_names(cfg.train.report_to)


def build_components(cfg: ExperimentConfig, run: RunDir | None, device: torch.device) -> Components:
    # Importing registers the augmentations.
    from clipbackdoor.data import augment_image, augment_text  # noqa: F401

    model, tokenizer, eval_set, attack, extra = build_eval_parts(cfg, device)
    pairs = registries.DATASETS.build(cfg.data.train, "data.train", **extra)
    return Components(
        model=model,
        tokenizer=tokenizer,
        pairs=pairs,
        eval_set=eval_set,
        attack=attack,
        poisoner=build_poisoner(cfg, pairs, attack, run),
        text_augment=registries.TEXT_AUGMENTATIONS.build(cfg.data.text_augment, "data.text_augment"),
        image_augment=registries.IMAGE_AUGMENTATIONS.build(cfg.data.image_augment, "data.image_augment"),
        validation=(registries.DATASETS.build(cfg.data.validation, "data.validation", **extra)
                    if cfg.data.validation else None),
    )
