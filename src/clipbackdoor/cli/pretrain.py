"""``clipbackdoor pretrain``: train a CLIP model from scratch on (possibly poisoned) pairs."""

from __future__ import annotations

from clipbackdoor.cli.common import add_config_args, add_report_to_arg, config_from_args, print_metrics, train_with


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train CLIP (MMCL, MMCL+SSL, ...) on poisoned pairs",
                       description="Pre-train a CLIP model. Without --config it runs the synthetic MMCL "
                                   "default; the shipped configs `mmcl` and `mmcl-ssl` poison 5%% of the pairs.")
    add_config_args(p)
    add_report_to_arg(p)
    p.add_argument("--out", "-o", required=True, help="run directory (re-running resumes it)")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config_from_args(args)
    summary = train_with(cfg, args.out)
    if summary is not None:  # rank 0 of a torchrun job, or a single process
        print_metrics(f"pre-training finished: {args.out}", summary["final"])
    return 0
