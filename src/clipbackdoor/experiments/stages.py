"""The two kinds of run, as library calls: pre-train a model, or clean one that a pre-training run made.

The CLI subcommands and the sweep runner both build their configs here, so a run launched by hand and the
same run launched by a sweep resolve to the same ``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipbackdoor.config import ExperimentConfig, load_config
from clipbackdoor.registry import ConfigError

# What a cleaning run keeps from the model it cleans: the architecture, the trigger it measures, the
# evaluation set and the seed. Everything else (data, budget, schedule) comes from the cleaning config.
INHERITED = ("seed", "model", "attack")
DEFAULT_CLEAN_CONFIG = "clean"


def pretrain_config(config: str | Path | None, overrides: list[str]) -> ExperimentConfig:
    return load_config(config, overrides)


def resolve_source(source: str | Path, epoch: int | None = None) -> tuple[dict[str, Any], Path]:
    """(the source run's config, the checkpoint to clean) for ``--from`` a run directory or a checkpoint.

    A checkpoint outside any run (e.g. one the original CleanCLIP code wrote) has no config: ({}, file).
    """
    from clipbackdoor.rundir import RunDir, epoch_weights_name

    src = Path(source)
    source_run = RunDir.containing(src)
    upstream = source_run.config_dict()
    if upstream is None:
        if src.is_file():
            return {}, src
        raise ConfigError(f"--from {src}: no config.yaml in the source run {source_run.path}")
    if src.is_file():
        return upstream, src
    if epoch is not None:
        ckpt = source_run.checkpoints / epoch_weights_name(epoch)
        if not ckpt.is_file():
            raise ConfigError(f"--epoch {epoch}: {ckpt} does not exist")
        return upstream, ckpt
    return upstream, source_run.path


def clean_config(
    source: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    defense: str | None = None,
    epoch: int | None = None,
) -> ExperimentConfig:
    """The config of a run that cleans ``source`` (a run directory or a checkpoint in one)."""
    upstream, ckpt = resolve_source(source, epoch)
    return clean_config_from(upstream, ckpt, config, overrides, defense=defense)


def clean_config_from(
    upstream: dict[str, Any],
    ckpt: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    defense: str | None = None,
) -> ExperimentConfig:
    """The config of a run that cleans checkpoint ``ckpt`` of a run whose resolved config is ``upstream``
    (``{}`` for a checkpoint from elsewhere); the run need not exist yet (a sweep checks its runs first)."""
    # A foreign checkpoint's model, attack and evaluation set come from the config and overrides instead.
    base = {k: upstream[k] for k in INHERITED if k in upstream}
    if "data" in upstream:
        base["data"] = {"eval": upstream["data"]["eval"]}
    base["defense"] = {"name": "cleanclip"}
    overrides = list(overrides or [])
    if defense:
        overrides.insert(0, f"defense.name={defense}")
    cfg = load_config(config or DEFAULT_CLEAN_CONFIG, overrides, base=base)
    # The caller names the model to clean; no config file may silently replace it.
    cfg.init.checkpoint = str(ckpt)
    return cfg
