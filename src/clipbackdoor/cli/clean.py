"""``clipbackdoor clean``: fine-tune a (poisoned) model on clean pairs with a defense."""

from __future__ import annotations

from pathlib import Path

from clipbackdoor.cli.common import add_config_args, log_to_file, print_metrics
from clipbackdoor.config import load_config
from clipbackdoor.defenses import DEFENSES
from clipbackdoor.registry import ConfigError

# What a cleaning run keeps from the model it cleans: the architecture, the trigger it measures, the
# evaluation set and the seed. Everything else (data, budget, schedule) comes from the cleaning config.
INHERITED = ("seed", "model", "attack")


def add_parser(sub) -> None:
    p = sub.add_parser("clean", help="clean a model: CleanCLIP, MMCL-only or SSL-only fine-tuning",
                       description="Fine-tune a pre-trained model on clean data. The model, attack and "
                                   "evaluation set are taken from the source run; the shipped `clean` config "
                                   "sets the cleaning data and schedule.")
    p.add_argument("--from", dest="source", required=True,
                   help="pre-training run directory, or a .safetensors/.pt checkpoint inside one")
    p.add_argument("--epoch", type=int, help="clean the weights after this pre-training epoch (default: last)")
    p.add_argument("--defense", "-d",
                   help=f"one of: {', '.join(DEFENSES.names())} (default: the config's, else cleanclip)")
    add_config_args(p)
    p.add_argument("--out", "-o", required=True, help="run directory (re-running resumes it)")
    p.set_defaults(func=run)


def _source(args) -> tuple[dict, Path]:
    """(the source run's config, the checkpoint to clean)."""
    from clipbackdoor.train.checkpoint import epoch_weights_name
    from clipbackdoor.train.run import RunDir

    src = Path(args.source)
    source_run = RunDir.containing(src)
    upstream = source_run.config_dict()
    if upstream is None:
        raise ConfigError(f"--from {src}: no config.yaml in the source run {source_run.path}")
    if src.is_file():
        return upstream, src
    if args.epoch is not None:
        ckpt = source_run.checkpoints / epoch_weights_name(args.epoch)
        if not ckpt.is_file():
            raise ConfigError(f"--epoch {args.epoch}: {ckpt} does not exist")
        return upstream, ckpt
    return upstream, source_run.path


def run(args) -> int:
    from clipbackdoor.train.loop import run_training

    upstream, ckpt = _source(args)
    base = {k: upstream[k] for k in INHERITED}
    base["data"] = {"eval": upstream["data"]["eval"]}
    base["defense"] = {"name": "cleanclip"}
    overrides = list(args.overrides)
    if args.defense:
        overrides.insert(0, f"defense.name={args.defense}")
    cfg = load_config(args.config or "clean", overrides, base=base)
    # The command line names the model to clean; no config file may silently replace it.
    cfg.init.checkpoint = str(ckpt)
    log_to_file(args.out)
    summary = run_training(cfg, args.out)
    print_metrics(f"cleaning ({cfg.defense['name']}) finished: {args.out}", summary["final"])
    return 0
