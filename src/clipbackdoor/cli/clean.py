"""``clipbackdoor clean``: fine-tune a (poisoned) model on clean pairs with a defense."""

from __future__ import annotations

from clipbackdoor.cli.common import add_config_args, log_to_file, print_metrics
from clipbackdoor.defenses import DEFENSES


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


def run(args) -> int:
    from clipbackdoor.experiments.stages import clean_config
    from clipbackdoor.train.loop import run_training

    cfg = clean_config(args.source, args.config, args.overrides, defense=args.defense, epoch=args.epoch)
    log_to_file(args.out)
    summary = run_training(cfg, args.out)
    print_metrics(f"cleaning ({cfg.defense['name']}) finished: {args.out}", summary["final"])
    return 0
