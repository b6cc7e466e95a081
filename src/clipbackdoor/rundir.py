"""Run directories: the unit every later stage reads, readable without torch.

A run directory holds ``config.yaml`` (resolved, written first), ``metrics.jsonl``, ``checkpoints/``
(``last.pt``, the training state, and ``epoch_<e>.safetensors``, the weights after each epoch),
``poison_manifest.json`` (and its picture, ``trigger_gallery.png``) where the training data were
poisoned, and ``summary.json`` once the run is complete. Reports, sweeps and the CLI find their way
around one through this module alone, so none of them needs torch to read a run.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from clipbackdoor.config import (
    EXECUTION_KEYS,
    ExperimentConfig,
    config_from_dict,
    dump_config,
    parse_yaml_mapping,
    read_text_file,
)
from clipbackdoor.io import atomic_write_text
from clipbackdoor.registry import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
# The names poison.manifest and poison.gallery write under (kept here so that reading a run needs neither).
MANIFEST_NAME = "poison_manifest.json"
GALLERY_NAME = "trigger_gallery.png"


def epoch_weights_name(epoch: int) -> str:
    return f"epoch_{epoch}.safetensors"


def latest_weights(run_dir: Path) -> Path:
    """A run's newest weights: ``last.pt``, or the last epoch's weights of a run that kept no state."""
    last = run_dir / CHECKPOINT_DIR / LAST
    if last.is_file():
        return last
    # Numeric order (epoch_10 after epoch_9); files named otherwise are not epoch checkpoints.
    numbered = [(int(p.stem[6:]), p) for p in (run_dir / CHECKPOINT_DIR).glob("epoch_*.safetensors")
                if p.stem[6:].isdigit()]
    epochs = [p for _, p in sorted(numbered)]
    if not epochs:
        raise ConfigError(f"{run_dir} holds no checkpoint ({CHECKPOINT_DIR}/{LAST} or epoch_<n>.safetensors)")
    return epochs[-1]


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
