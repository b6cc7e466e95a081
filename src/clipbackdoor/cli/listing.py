"""``clipbackdoor list``: what the registries hold."""

from __future__ import annotations

WHAT = ("models", "attacks", "objectives", "defenses", "datasets", "eval-datasets", "configs", "sweeps")


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list models, attacks, objectives, defenses, datasets, configs or sweeps")
    p.add_argument("what", choices=WHAT, nargs="?", default=None)
    p.set_defaults(func=run)


def _names(what: str) -> list[str]:
    from clipbackdoor import data, defenses, objectives, poison
    from clipbackdoor.config import shipped_configs
    from clipbackdoor.experiments.spec import shipped_sweeps
    from clipbackdoor.models import list_models

    table = {
        "models": list_models,
        "attacks": poison.ATTACKS.names,
        "objectives": objectives.OBJECTIVES.names,
        "defenses": defenses.DEFENSES.names,
        "datasets": data.DATASETS.names,
        "eval-datasets": data.EVAL_DATASETS.names,
        "configs": shipped_configs,
        "sweeps": shipped_sweeps,
    }
    return table[what]()


def run(args) -> int:
    for what in [args.what] if args.what else WHAT:
        print(f"{what}: {', '.join(_names(what))}")
    return 0
