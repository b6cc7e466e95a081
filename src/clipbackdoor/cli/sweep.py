"""``clipbackdoor sweep``: run a grid of runs from a sweep spec with local worker processes."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep (grid or list over config keys) with N local workers",
                       description="Run every run of a sweep spec (a YAML file or a shipped sweep name, see "
                                   "`list sweeps`). Re-running skips complete runs and resumes the others; "
                                   "results.csv is rebuilt from the run directories at the end.")
    p.add_argument("spec", help="sweep YAML file, or a shipped sweep name")
    p.add_argument("--out", "-o", required=True, help="sweep directory (one run directory per run inside)")
    p.add_argument("--workers", "-j", type=int, help="parallel runs (default: the spec's `workers`)")
    p.add_argument("--devices", help="comma-separated devices, one run at a time on each "
                                     "(e.g. cuda:0,cuda:1,cuda:2,cuda:3; repeat one to share it)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their overrides, run nothing")
    p.add_argument("--report", action="store_true", help="write the report when the sweep is done")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.experiments.sweep import check_jobs, expand, load_spec, run_sweep
    from clipbackdoor.registry import ConfigError
    from clipbackdoor.reporting.collect import write_index

    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers: must be >= 1")
    spec = load_spec(args.spec)
    if args.dry_run:
        jobs = expand(spec)
        check_jobs(jobs, args.out)
        for job in jobs:
            source = f" (cleans {job.source})" if job.source else ""
            print(f"{job.name}{source}: {job.command} {job.config or ''} {' '.join(job.overrides)}")
        return 0
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    result = run_sweep(spec, args.out, workers=args.workers, devices=devices)
    print(f"results index: {write_index(args.out)}")
    if args.report:
        from clipbackdoor.reporting.report import write_report

        print(f"report: {write_report(args.out).html_path}")
    for name, reason in result.failed.items():
        print(f"failed: {name}: {reason}")
    return 0 if result.ok else 1
