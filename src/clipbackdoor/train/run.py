"""Run directories and the assembly of a run's components from its config.

A run directory is the unit that every later stage reads: ``config.yaml`` (resolved, written first),
``metrics.jsonl``, ``checkpoints/``, ``poison_manifest.json`` (and its picture, ``trigger_gallery.png``)
where the training data were poisoned, and ``summary.json`` once the run is complete.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipbackdoor.config import (
    EXECUTION_KEYS,
    ExperimentConfig,
    config_from_dict,
    dump_config,
    parse_yaml_mapping,
    read_text_file,
)
from clipbackdoor.data import registries
from clipbackdoor.data.errors import DataError
from clipbackdoor.io import atomic_write_text
from clipbackdoor.models import create_model
from clipbackdoor.poison import ATTACKS, MANIFEST_NAME, PoisonManifest, Poisoner, create_manifest
from clipbackdoor.poison.gallery import GALLERY_NAME, write_gallery
from clipbackdoor.registry import ConfigError

log = logging.getLogger(__name__)



class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    manifest = property(lambda self: self.path / MANIFEST_NAME)
    gallery = property(lambda self: self.path / GALLERY_NAME)
    summary_path = property(lambda self: self.path / "summary.json")

    @classmethod
    def containing(cls, path: str | Path) -> RunDir:
        """The run directory itself, or the one whose ``checkpoints/`` holds the checkpoint file ``path``."""
        path = Path(path)
        return cls(path if path.is_dir() else path.parent.parent)

    def config_dict(self) -> dict[str, Any] | None:
        """The run's resolved config as a plain dict; None if this is not a run directory.

        Raises:
            ConfigError: naming ``config.yaml``, when it cannot be read, is not YAML, holds a tag that
                would build a Python object (never run), or is not a config this tool could have written.
        """
        if not self.config_path.is_file():
            return None
        data = parse_yaml_mapping(read_text_file(self.config_path), str(self.config_path))
        try:
            config_from_dict(copy.deepcopy(data))
        except ConfigError as err:
            raise ConfigError(f"{self.config_path}: not a run's config: {err}") from None
        return data

    def has_started(self) -> bool:
        """Whether training wrote anything worth keeping: a checkpoint (the epoch-0 one comes first)."""
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())

    def write_config(self, cfg: ExperimentConfig) -> None:
        """Write the resolved config; a run directory that has started must hold the same experiment.

        A directory whose run stopped before its first checkpoint (a typo in a component key, a missing
        file) holds no work, so a corrected command may take it over: its config is replaced and the files
        that came from the old one (poison manifest, gallery, metrics) are removed.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file, not a run directory; choose another output directory")
        try:
            old = self.config_dict()
        except ConfigError as err:
            raise ConfigError(f"cannot use {self.path} as the run directory: {err}") from None
        if old is not None:
            diff = _differences(old, cfg.to_dict())
            if diff and self.has_started():
                raise ConfigError(
                    f"{self.path} already holds a run with a different config ({'; '.join(diff[:5])}); "
                    "choose a new output directory or delete it"
                )
            if diff:
                log.info("%s: replacing the config of a run that never started (%s)", self.path, "; ".join(diff[:5]))
                for stale in (self.manifest, self.gallery, self.metrics, self.summary_path):
                    stale.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, dump_config(cfg))

    def is_complete(self) -> bool:
        return self.summary_path.is_file()

    def config_differences(self, cfg: ExperimentConfig, ignore: tuple[tuple[str, ...], ...] = ()) -> list[str]:
        """How the run's config differs from ``cfg`` (``key: old -> new``, execution keys and ``ignore``
        aside); empty when they agree or there is no run here."""
        old = self.config_dict()
        return [] if old is None else _differences(old, cfg.to_dict(), ignore=frozenset(ignore))

    def summary(self) -> dict[str, Any]:
        """The summary of a complete run.

        Raises:
            ConfigError: naming ``summary.json`` when it is not a JSON object (damaged or edited).
        """
        try:
            data = json.loads(self.summary_path.read_bytes())
        except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            data = err
        if not isinstance(data, dict) or not isinstance(data.get("final"), dict):
            detail = f": {' '.join(str(data).split())[:200]}" if isinstance(data, Exception) else ""
            raise ConfigError(
                f"{self.summary_path} is not a run summary{detail}; delete it and run the same command again: "
                "the run resumes from checkpoints/last.pt (a run that kept none trains again)"
            )
        return data


def _differences(old: dict, new: dict, prefix: tuple[str, ...] = (), ignore: frozenset = frozenset()) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        path = (*prefix, key)
        if path in EXECUTION_KEYS or path in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, path, ignore)
        elif a != b:
            out.append(f"{'.'.join(path)}: {a!r} -> {b!r}")
    return out


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
