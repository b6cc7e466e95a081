"""``run_demo``: the paper's whole experiment at laptop scale, then its report.

The demo is a shipped sweep (``configs/sweeps/demo*.yaml``, one per preset) run by the ordinary sweep
runner, followed by the ordinary report. Nothing here is special-cased, so every number the demo prints can
be re-made with ``clipbackdoor sweep`` and ``clipbackdoor report``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clipbackdoor.experiments.sweep import load_spec, parse_spec, run_sweep
from clipbackdoor.registry import ConfigError

PRESETS = {"default": "demo", "quick": "demo-quick", "headline": "headline", "paper-mini": "paper-mini"}


def run_demo(out: str | Path, preset: str = "default", *, workers: int | None = None,
             seeds: list[int] | None = None, attack: str | None = None, echo: Callable[[str], None] = print):
    """Run the preset's sweep in ``out`` (resuming it if it was interrupted) and write the report there.

    ``attack`` replaces the preset's BadNet trigger by another registered attack, with its defaults.
    """
    from clipbackdoor.reporting.report import write_report

    if preset not in PRESETS:
        raise ConfigError(f"unknown demo preset {preset!r}; choose one of {', '.join(PRESETS)}")
    spec = load_spec(PRESETS[preset])
    if attack is not None:
        spec = _with_attack(spec, attack)
    if seeds is not None:
        _set_seeds(spec, seeds)
    result = run_sweep(spec, out, workers=workers, echo=echo)
    report = write_report(out, title=f"clipbackdoor demo ({preset})")
    return result, report


def _with_attack(spec, name: str):
    """The spec with every pre-training stage poisoning with ``name`` (cleaning runs inherit the attack)."""
    import copy

    from clipbackdoor.poison import ATTACKS

    if name not in ATTACKS:
        raise ConfigError(f"--attack: unknown attack {name!r}; choose one of {', '.join(ATTACKS.names())}")
    raw = copy.deepcopy(spec.raw)
    for stage in raw["stages"].values():
        if stage.get("command") == "pretrain":
            stage["set"] = {**stage.get("set", {}), "attack": {"name": name, "target": "banana"}}
    return parse_spec(raw)


def _set_seeds(spec, seeds: list[int]) -> None:
    """Replace the pre-training seeds (cleaning runs inherit theirs from the model they clean)."""
    from clipbackdoor.experiments.spec import grid_points

    stage = spec.stages[0]
    if stage.command != "pretrain" or stage.axes == ["run"]:
        raise ConfigError("--seeds needs a preset whose first stage is a pre-training grid")
    grid = dict(spec.raw["stages"][stage.name].get("grid", {}))
    grid["seed"] = list(seeds)
    spec.raw["stages"][stage.name]["grid"] = grid
    stage.points, stage.axes = grid_points(grid, f"stages.{stage.name}.grid"), list(grid)
