"""``clipbackdoor demo``: the paper's experiment end to end on a laptop CPU, with its report."""

from __future__ import annotations

import time


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the whole experiment on synthetic data and write the report",
                       description="Generate synthetic image-caption pairs, poison them with BadNet, pre-train "
                                   "MMCL and MMCL+SSL models (and un-poisoned controls), clean each with "
                                   "CleanCLIP, MMCL-only and SSL-only fine-tuning over a learning-rate grid, "
                                   "evaluate every epoch, and write DIR/report.html. Re-running resumes.")
    p.add_argument("--out", "-o", default="runs/demo", help="output folder (default: runs/demo)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="preset",
                       help="smoke test in under 2 minutes (mechanics only)")
    group.add_argument("--preset", choices=("default", "quick", "headline", "paper-mini"),
                       help="default (about 7 min on 2 cores), quick, headline (the paper's headline: mid-clip, 3 "
                            "seeds, with controls, about 46 min), or paper-mini (3 seeds, about 50 min)")
    p.add_argument("--seeds", type=int, nargs="+", help="pre-training seeds (default: the preset's)")
    p.add_argument("--attack", help="poison with this attack instead of BadNet (see `clipbackdoor list attacks`)")
    p.add_argument("--workers", "-j", type=int, help="parallel runs (default: the preset's, 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.experiments.demo import run_demo

    if args.workers is not None and args.workers < 1:
        from clipbackdoor.errors import ConfigError

        raise ConfigError("--workers: must be >= 1")
    start = time.perf_counter()
    result, report = run_demo(args.out, args.preset or "default", workers=args.workers, seeds=args.seeds,
                              attack=args.attack)
    print()
    print(report.summary())  # the answer first, then the table and the details
    print()
    print(f"report: {report.html_path}  (tables: {report.out / 'summary.md'}, plots: {report.out / 'plots'})")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    for name, reason in result.failed.items():
        print(f"failed: {name}: {reason}")
    return 0 if result.ok else 1
