"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from clipbackdoor.config import ExperimentConfig, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML config file or shipped config name (see `list configs`)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. train.epochs=3 poison.budget=0.05")


def config_from_args(args: argparse.Namespace, default: str | None = None) -> ExperimentConfig:
    return load_config(args.config or default, args.overrides)


def log_to_file(run_dir: str | Path) -> None:
    """Mirror the log into ``<run>/log.txt`` so a run directory explains itself."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    print(title)
    for key in ("zeroshot_top1", "zeroshot_top5", "asr_top1", "asr_top1_std", "asr_top5", "clean_target_rate"):
        if key in metrics:
            print(f"  {key:<18} {metrics[key]:.4f}")
