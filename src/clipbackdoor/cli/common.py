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


def add_report_to_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report-to", metavar="LOGGERS",
                        help="also log metrics to tensorboard and/or wandb, e.g. --report-to tensorboard,wandb "
                             "(the same as train.report_to=...; see docs/loggers.md)")


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The KEY=VALUE overrides, with ``--report-to`` as one more (last, so it wins)."""
    extra = [f"train.report_to={args.report_to}"] if getattr(args, "report_to", None) is not None else []
    return [*args.overrides, *extra]


def config_from_args(args: argparse.Namespace, default: str | None = None) -> ExperimentConfig:
    return load_config(args.config or default, overrides_from_args(args))


def dist_context():
    """This process's place in a torchrun job (a single process outside one). Other ranks than 0 log
    warnings only and show no progress bar, so a job prints one set of messages."""
    import os

    from clipbackdoor.distributed import DistContext

    ctx = DistContext.from_env(os.environ)
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    return ctx


def train_with(cfg: ExperimentConfig, out: str) -> dict[str, Any] | None:
    """Run (or resume) training into ``out``, as one rank of a torchrun job when launched by torchrun;
    the run's summary on rank 0, None on the other ranks."""
    from clipbackdoor import distributed
    from clipbackdoor.train.loop import run_training

    ctx = dist_context()
    if ctx.is_main:
        log_to_file(out)
    else:
        cfg.train.progress = False
    try:
        summary = run_training(cfg, out, ctx)
    finally:
        distributed.shutdown()
    return summary if ctx.is_main else None


def log_to_file(run_dir: str | Path) -> None:
    """Mirror the log into ``<run>/log.txt`` so a run directory explains itself."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        from clipbackdoor.errors import ConfigError

        raise ConfigError(f"--out {path} is a file, not a run directory; choose another output directory")
    path.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    print(title)
    for key in ("zeroshot_top1", "zeroshot_top5", "asr_top1", "asr_top1_std", "asr_top5", "clean_target_rate"):
        if key in metrics:
            print(f"  {key:<18} {metrics[key]:.4f}")
