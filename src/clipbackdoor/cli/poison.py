"""``clipbackdoor poison``: draw a poison manifest, and optionally write the poisoned dataset to disk."""

from __future__ import annotations

from clipbackdoor.cli.common import add_config_args, config_from_args, log_to_file


def add_parser(sub) -> None:
    p = sub.add_parser("poison", help="poison a dataset: write poison_manifest.json (and the data, on request)",
                       description="Choose the pairs to poison and their triggers from the config's seed and "
                                   "write poison_manifest.json and a picture of the triggers, trigger_gallery.png. "
                                   "Training applies the manifest on the fly; "
                                   "--export also writes a CleanCLIP-format CSV with the triggered images.")
    add_config_args(p)
    p.add_argument("--out", "-o", required=True, help="output directory")
    p.add_argument("--export", action="store_true", help="also write <out>/data/poisoned.csv and its images")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from clipbackdoor.data.registries import DATASETS
    from clipbackdoor.poison.export import export_poisoned
    from clipbackdoor.registry import ConfigError
    from clipbackdoor.rundir import RunDir
    from clipbackdoor.train.run import build_eval_parts, build_poisoner

    cfg = config_from_args(args, default="mmcl")
    if cfg.poison.budget <= 0 and not cfg.poison.manifest:
        raise ConfigError("poison.budget: set a count (>= 1) or a rate (< 1) of pairs to poison")
    log_to_file(args.out)
    run = RunDir(args.out)
    run.write_config(cfg)
    _, _, _, attack, extra = build_eval_parts(cfg, torch.device("cpu"))
    pairs = DATASETS.build(cfg.data.train, "data.train", **extra)
    poisoner = build_poisoner(cfg, pairs, attack, run)
    n = len(poisoner.manifest.samples)
    print(f"poisoned {n} of {len(pairs)} pairs ({n / len(pairs):.2%}); manifest: {run.manifest}")
    if run.gallery.is_file():
        print(f"trigger gallery: {run.gallery}")
    if args.export:
        csv_path = export_poisoned(pairs, poisoner, run.path / "data")
        print(f"poisoned dataset: {csv_path}")
    return 0
