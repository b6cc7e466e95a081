"""The ``slurm:`` section of a sweep spec: its keys and the check of their values.

Apart from ``experiments.slurm`` (which writes and submits the job arrays) so that ``experiments.spec`` can
check a spec's section without importing the launcher, and the launcher can use the spec's types.
"""

from __future__ import annotations

import re
from typing import Any

from clipbackdoor.errors import ConfigError, did_you_mean

# Spec key -> what it is, for the error that lists them.
SLURM_KEYS = {
    "partition": "partition name", "account": "account to charge", "qos": "quality of service",
    "time": "time limit of one run", "constraint": "node features", "nodes": "nodes per run",
    "gpus_per_node": "GPUs per node", "ntasks_per_node": "processes per node (default: gpus_per_node)",
    "cpus_per_task": "CPUs per process (default: the spec's threads)", "mem": "memory per node",
    "max_parallel": "array tasks running at once", "setup": "shell lines run first",
    "extra": "more sbatch options",
}
_NAMES = ("partition", "account", "qos", "constraint")
_COUNTS = {"nodes": 1, "gpus_per_node": 0, "ntasks_per_node": 1, "cpus_per_task": 1, "max_parallel": 1}
# Slurm's time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]].
_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|unlimited|infinite", re.IGNORECASE)
_MEM = re.compile(r"\d+[KMGT]?", re.IGNORECASE)

def check_slurm_options(raw: Any, where: str) -> dict[str, Any]:
    """The checked ``slurm:`` section at ``where`` (``sweep.slurm`` or ``stages.<name>.slurm``)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of Slurm settings ({', '.join(SLURM_KEYS)}), got {raw!r}")
    checked = {}
    for key, value in raw.items():
        key = str(key)
        if key not in SLURM_KEYS:
            raise ConfigError(f"{where}.{key}: unknown Slurm setting{_suggest(key)}; valid: {', '.join(SLURM_KEYS)}")
        checked[key] = check_slurm_value(key, value, f"{where}.{key}")
    return checked


def check_slurm_value(key: str, value: Any, field: str) -> Any:
    """``value`` of the setting ``key``, checked (and normalised: ``setup`` and ``extra`` become lists of
    lines); ``field`` names it in the one-line error."""
    if key in _NAMES:
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise ConfigError(f"{field}: expected a name without spaces, got {value!r}")
        return value
    if key in _COUNTS:
        low = _COUNTS[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{field}: expected an integer >= {low}, got {value!r}")
        return value
    if key == "time":
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 24:00:00 as the number 86400: a number here is never what was meant.
            raise ConfigError(f"{field}: give the time limit as a quoted string such as \"24:00:00\" or "
                              f"\"1-12:00:00\" (YAML read {value!r}, a number)")
        if not isinstance(value, str) or not _TIME.fullmatch(value):
            raise ConfigError(f"{field}: expected a Slurm time (MM, HH:MM:SS or D-HH:MM:SS), got {value!r}")
        return value
    if key == "mem":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)  # megabytes, as sbatch reads a bare number
        if not isinstance(value, str) or not _MEM.fullmatch(value):
            raise ConfigError(f"{field}: expected a size such as 64G or 500M, got {value!r}")
        return value
    lines = _lines(value, field)
    if key == "extra":
        options = [line.removeprefix("#SBATCH").strip() for line in lines]
        bad = next((o for o in options if not o.startswith("-")), None)
        if bad is not None:
            raise ConfigError(f"{field}: each entry is an sbatch option such as --mail-type=END, got {bad!r}")
        return options
    return lines


def _lines(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        return value.splitlines()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{field}: expected a list of strings, got {value!r}")
    return [line for v in value for line in v.splitlines()]


def _suggest(key: str) -> str:
    # "gpus" is too short for difflib to find "gpus_per_node"; a prefix is as good a hint.
    hint = did_you_mean(key, SLURM_KEYS)
    if not hint:
        starts = [k for k in SLURM_KEYS if k.startswith(key.replace("-", "_"))]
        hint = f" (did you mean {' or '.join(map(repr, starts))}?)" if starts else ""
    return hint
