"""``clipbackdoor pretrain``: train a CLIP model from scratch on (possibly poisoned) pairs."""

from __future__ import annotations

from clipbackdoor.cli.common import add_config_args, config_from_args, log_to_file, print_metrics


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train CLIP (MMCL, MMCL+SSL, ...) on poisoned pairs",
                       description="Pre-train a CLIP model. Without --config it runs the synthetic MMCL "
                                   "default; the shipped configs `mmcl` and `mmcl-ssl` poison 5%% of the pairs.")
    add_config_args(p)
    p.add_argument("--out", "-o", required=True, help="run directory (re-running resumes it)")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.train.loop import run_training

    cfg = config_from_args(args)
    log_to_file(args.out)
    summary = run_training(cfg, args.out)
    print_metrics(f"pre-training finished: {args.out}", summary["final"])
    return 0
