"""``clipbackdoor data check``: find the rows a run would skip, before the run.

It builds the configured datasets with ``on_error`` forced to ``skip`` (where a dataset has it), asks each
for ``validate()`` (``data.validate``) and prints rows, usable rows, what would be skipped by reason and
example problems. The exit status gates a pipeline: 0 if nothing would be skipped, 1 if something would,
2 if a dataset cannot be built at all (missing CSV columns, bad labels, unknown keys).
"""

from __future__ import annotations

import os

from clipbackdoor.cli.common import add_config_args, config_from_args

SPLITS = ("train", "validation", "eval")


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="check training and evaluation data before a run",
                       description="Dataset utilities. `data check` reports what a run would skip.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser(
        "check", help="report unusable rows and images of the configured datasets",
        description="Build the datasets of a config (on_error forced to skip) and report rows, usable rows, "
                    "skipped rows by reason and up to 20 examples. Exit status: 0 if nothing would be "
                    "skipped, 1 if something would, 2 if a dataset cannot be built.")
    add_config_args(c)
    c.add_argument("--split", choices=(*SPLITS, "all"), default="all",
                   help="which data section to check (default: all configured ones)")
    c.add_argument("--decode", action="store_true",
                   help="also decode every image and report the corrupt ones (slow: it reads all images)")
    c.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="threads for --decode and for stat checks (default: %(default)s)")
    c.set_defaults(func=run_check)


def run_check(args) -> int:
    from clipbackdoor.data import registries
    from clipbackdoor.data.validate import build_for_check
    from clipbackdoor.errors import ConfigError, DataError
    from clipbackdoor.models.factory import model_image_size

    cfg = config_from_args(args)
    extra = {"image_size": model_image_size(cfg.model["name"]), "experiment_seed": cfg.seed}
    status = 0
    for split in SPLITS if args.split == "all" else (args.split,):
        section = getattr(cfg.data, split)
        where = f"data.{split}"
        if not section:
            print(f"{where}: not configured")
            continue
        registry = registries.EVAL_DATASETS if split == "eval" else registries.DATASETS
        try:
            dataset = build_for_check(registry, section, where, **extra)
            if not hasattr(dataset, "validate"):
                raise ConfigError(f"{type(dataset).__name__} cannot be checked (it has no validate())")
            result = dataset.validate(decode=args.decode, workers=args.workers)
        except (ConfigError, DataError) as err:
            print(f"{where}: error: {err}")
            status = 2
            continue
        print_report(f"{where} ({dataset.describe().get('name', '?')})", result)
        if result["skipped"] and status == 0:
            status = 1
    return status


def print_report(title: str, result: dict) -> None:
    """One dataset's ``validate()`` result, as a few aligned lines."""
    skipped = sum(result["skipped"].values())
    print(title)
    print(f"  rows     {result['rows']:>12,}")
    print(f"  usable   {result['usable']:>12,}")
    print(f"  skipped  {skipped:>12,}")
    for reason, count in sorted(result["skipped"].items(), key=lambda kv: -kv[1]):
        print(f"    {count:>10,}  {reason}")
    if result["examples"]:
        print(f"  first {len(result['examples'])} problems:")
        for example in result["examples"]:
            print(f"    {example}")
