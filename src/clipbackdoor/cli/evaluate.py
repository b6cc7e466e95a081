"""``clipbackdoor evaluate``: zero-shot accuracy and ASR of a checkpoint."""

from __future__ import annotations

from pathlib import Path

from clipbackdoor.cli.common import add_config_args, print_metrics
from clipbackdoor.config import load_config
from clipbackdoor.registry import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="zero-shot accuracy and attack success rate of a checkpoint",
                       description="Evaluate a run directory (its last weights) or a checkpoint file inside "
                                   "one, with the run's model, attack and evaluation set unless overridden.")
    p.add_argument("--checkpoint", required=True, help="run directory or .safetensors/.pt checkpoint")
    add_config_args(p)
    p.add_argument("--out", "-o", help="run directory to write config.yaml and metrics.jsonl into")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.experiments.evaluate import evaluate_checkpoint
    from clipbackdoor.rundir import RunDir

    src = Path(args.checkpoint)
    base = RunDir.containing(src).config_dict()
    if base is not None:
        base.pop("defense", None)
    elif not args.config:
        raise ConfigError(f"{src} is not inside a run directory; pass --config to describe the model")
    cfg = load_config(args.config, args.overrides, base=base)
    metrics = evaluate_checkpoint(cfg, src, args.out)
    print_metrics(f"evaluation of {src}", metrics)
    return 0
