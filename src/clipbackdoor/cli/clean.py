"""``clipbackdoor clean``: fine-tune a (poisoned) model on clean pairs with a defense."""

from __future__ import annotations

from clipbackdoor.cli.common import add_config_args, add_report_to_arg, overrides_from_args, print_metrics, train_with
from clipbackdoor.defenses import DEFENSES


def add_parser(sub) -> None:
    p = sub.add_parser("clean", help="clean a model: CleanCLIP, MMCL-only or SSL-only fine-tuning",
                       description="Fine-tune a pre-trained model on clean data. The model, attack and "
                                   "evaluation set are taken from the source run; the shipped `clean` config "
                                   "sets the cleaning data and schedule.")
    p.add_argument("--from", dest="source", required=True,
                   help="pre-training run directory, or a checkpoint inside one; a checkpoint from elsewhere "
                        "(e.g. the original CleanCLIP code) takes its model, attack and eval set from the "
                        "overrides (model.name=RN50-quickgelu ...; see docs/checkpoints.md)")
    p.add_argument("--epoch", type=int, help="clean the weights after this pre-training epoch (default: last)")
    p.add_argument("--defense", "-d",
                   help=f"one of: {', '.join(DEFENSES.names())} (default: the config's, else cleanclip)")
    add_config_args(p)
    add_report_to_arg(p)
    p.add_argument("--out", "-o", required=True, help="run directory (re-running resumes it)")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.experiments.stages import clean_config
    cfg = clean_config(args.source, args.config, overrides_from_args(args), defense=args.defense, epoch=args.epoch)
    summary = train_with(cfg, args.out)
    if summary is not None:  # rank 0 of a torchrun job, or a single process
        print_metrics(f"cleaning ({cfg.defense['name']}) finished: {args.out}", summary["final"])
    return 0
