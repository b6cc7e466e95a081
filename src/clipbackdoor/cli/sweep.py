"""``clipbackdoor sweep``: run a grid of runs from a sweep spec with local worker processes, or submit it to
Slurm as one job array per stage (``--slurm``), whose tasks each run one run (``--run NAME``)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep (grid or list over config keys) with N local workers or on Slurm",
                       description="Run every run of a sweep spec (a YAML file or a shipped sweep name, see "
                                   "`list sweeps`). Re-running skips complete runs and resumes the others; "
                                   "results.csv is rebuilt from the run directories at the end. With --slurm, "
                                   "submit one Slurm job array per stage instead (docs/distributed.md).")
    p.add_argument("spec", help="sweep YAML file, or a shipped sweep name")
    p.add_argument("--out", "-o", required=True, help="sweep directory (one run directory per run inside)")
    p.add_argument("--workers", "-j", type=int, help="parallel runs (default: the spec's `workers`)")
    p.add_argument("--devices", help="comma-separated devices, one run at a time on each "
                                     "(e.g. cuda:0,cuda:1,cuda:2,cuda:3; repeat one to share it)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their overrides, run nothing "
                                                          "(with --slurm: write the scripts, submit nothing)")
    p.add_argument("--report", action="store_true", help="write the report when the sweep is done")
    slurm = p.add_argument_group("Slurm", "submit one job array per stage (resources: the spec's `slurm:` section)")
    slurm.add_argument("--slurm", action="store_true", help="write OUT/slurm/<stage>.sbatch and submit them")
    slurm.add_argument("--slurm-dry-run", action="store_true",
                       help="write the scripts and print the sbatch commands, submit nothing")
    slurm.add_argument("--partition", help="Slurm partition of every stage (replaces the spec's)")
    slurm.add_argument("--time", help="time limit of one run in every stage, e.g. 24:00:00 (replaces the spec's)")
    slurm.add_argument("--run", metavar="NAME",
                       help="run (or resume) only the run NAME in this process, as one rank under srun "
                            "(what each array task does)")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.experiments.sweep import check_jobs, expand, load_spec, run_sweep
    from clipbackdoor.registry import ConfigError
    from clipbackdoor.reporting.collect import write_index

    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers: must be >= 1")
    submitting = args.slurm or args.slurm_dry_run
    _check_flags(args, submitting)
    spec = load_spec(args.spec)
    if args.run is not None:
        return _run_one(spec, args)
    if submitting:
        return _submit(spec, args, dry_run=args.slurm_dry_run or args.dry_run)
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


def _check_flags(args, submitting: bool) -> None:
    """Options that mean nothing in the chosen mode are refused, not silently dropped."""
    from clipbackdoor.registry import ConfigError

    local = {"--workers": args.workers is not None, "--devices": bool(args.devices), "--report": args.report}
    if args.run is not None:
        mode, refused = "--run", {**local, "--slurm": submitting, "--dry-run": args.dry_run}
    else:
        mode, refused = "--slurm", local if submitting else {}
    for flag, given in refused.items():
        if given:
            later = "; run `clipbackdoor report OUT` when the runs are done" if flag == "--report" else ""
            raise ConfigError(f"{flag} does not go with {mode}: on Slurm every run is a job of its own{later}")
    for flag, value in (("--partition", args.partition), ("--time", args.time)):
        if value is not None and not submitting:
            raise ConfigError(f"{flag} is a Slurm setting: use it with --slurm or --slurm-dry-run")


def _submit(spec, args, dry_run: bool) -> int:
    import shlex
    import sys
    from pathlib import Path

    import yaml

    from clipbackdoor.experiments import slurm
    from clipbackdoor.experiments.slurm_options import check_slurm_value
    from clipbackdoor.experiments.sweep import SPEC_COPY, check_jobs, expand
    from clipbackdoor.io import atomic_write_text

    overrides = {key: check_slurm_value(key, value, f"--{key}")
                 for key, value in (("partition", args.partition), ("time", args.time)) if value is not None}
    out = Path(args.out).resolve()
    jobs = expand(spec)
    check_jobs(jobs, out)  # a typo in a grid stops here, not in every array task
    spec_path = Path(args.spec)
    # Array tasks start elsewhere: a spec file by its absolute path, a shipped sweep by its name.
    spec_ref = str(spec_path.resolve()) if spec_path.is_file() else args.spec
    launcher = f"{shlex.quote(sys.executable)} -m clipbackdoor"
    arrays = slurm.write_arrays(spec, jobs, out, spec_ref=spec_ref, launcher=launcher, workdir=Path.cwd(),
                                overrides=overrides)
    pending = sum(len(a.runs) for a in arrays)
    if not arrays:
        print(f"sweep {out}: all {len(jobs)} runs are complete; nothing to submit")
        return 0
    for array in arrays:
        after = f", after stage {array.after}" if array.after else ""
        print(f"wrote {array.script}: {len(array.runs)} run(s){after}; each {array.resources()}")
    if dry_run:
        print(f"nothing submitted; {out / slurm.SCRIPT_DIR / slurm.SUBMIT_SCRIPT} runs these commands:")
        for array in arrays:
            print(f"  {array.variable}=$({slurm.shell_command(array, arrays)})")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SPEC_COPY, yaml.safe_dump(spec.raw, sort_keys=False))
    ids = slurm.submit(arrays)
    for array in arrays:
        after = f" after job {ids[array.after]}" if array.after else ""
        print(f"{array.stage}: job {ids[array.stage]}, {len(array.runs)} run(s){after}")
    print(f"submitted {pending} of {len(jobs)} runs ({len(jobs) - pending} already complete); logs in "
          f"{out / slurm.SCRIPT_DIR / 'logs'}; when they are done: clipbackdoor report {out}")
    return 0


def _run_one(spec, args) -> int:
    """One run, in this process: what each Slurm array task does, one rank of it per srun task."""
    import contextlib
    from pathlib import Path

    from clipbackdoor.cli.common import dist_context, print_metrics, train_with
    from clipbackdoor.experiments.jobs import (
        check_jobs,
        is_complete,
        job_config,
        run_lock,
    )
    from clipbackdoor.experiments.slurm import find_job, lineage
    from clipbackdoor.experiments.sweep import expand
    from clipbackdoor.registry import ConfigError

    out = Path(args.out)
    jobs = expand(spec)
    job = find_job(jobs, args.run)
    # The run and the runs it builds on: a complete run made from another config is refused, as in a sweep.
    check_jobs(lineage(jobs, job), out)
    if is_complete(out / job.name):
        print(f"{job.name} is complete; nothing to do")
        return 0
    if job.source and not is_complete(out / job.source):
        raise ConfigError(f"--run {job.name}: it cleans {job.source}, which is not complete yet")
    # Only rank 0 writes the run directory, so it alone holds the lock (the other ranks would find it taken).
    ctx = dist_context()
    with run_lock(out / job.name) if ctx.is_main else contextlib.nullcontext():
        summary = train_with(job_config(job, out, spec.threads), str(out / job.name))
    if summary is not None:
        print_metrics(f"{job.name} finished", summary["final"])
    return 0
