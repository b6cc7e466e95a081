"""Chance accuracy of a report's zero-shot evaluation: 1 / the number of classes of the evaluation set.

A model that guesses scores this much, so an accuracy near it means a cleaning run destroyed the model
rather than removed a backdoor; the trade-off figures draw it as a line. Evaluation records carry the
class count (``eval_classes``). Runs made before they did get it from their ``data.eval`` section, built
through the evaluation-dataset registry exactly as the run built it: the class names are a property of the
built set (a shipped list, a file, the folders of an image tree, the synthetic generator's shapes), and
reading them any other way would duplicate each dataset's own rules.

Building needs the data where the report is made (and torch, imported only here and only when called). A
set that cannot be built there (a cluster path, a missing file) has no chance line, and the report says so.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from clipbackdoor.errors import ConfigError, DataError
from clipbackdoor.reporting.collect import RunInfo

log = logging.getLogger(__name__)


def chance_accuracy(runs: list[RunInfo]) -> float | None:
    """1 / classes of the evaluation set the runs share; None when it cannot be built here, or when the runs
    were evaluated on sets with different numbers of classes (one line would be wrong for some of them)."""
    logged = {_logged_classes(r) for r in runs}
    if None not in logged:
        counts = logged
    else:
        sections = {json.dumps(_eval_section(r), sort_keys=True, default=str) for r in runs}
        counts = {_classes(section) for section in sections if section != "null"}
    if len(counts) != 1 or None in counts:
        return None
    return 1.0 / counts.pop()


def _logged_classes(run: RunInfo) -> int | None:
    count = run.evals[-1].get("eval_classes") if run.evals else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None


def _eval_section(run: RunInfo) -> Any:
    return (run.config.get("data") or {}).get("eval")


@lru_cache(maxsize=32)
def _classes(section_json: str) -> int | None:
    """How many classes the evaluation set of ``section_json`` (a ``data.eval`` section as JSON) has; cached,
    since every run of a sweep names the same set and building one reads or generates all of its images."""
    from clipbackdoor.data import EVAL_DATASETS  # registers the evaluation sets; imports torch

    section = json.loads(section_json)
    try:
        return len(EVAL_DATASETS.build(section, "data.eval").classnames)
    except (ConfigError, DataError, OSError, ValueError) as err:
        log.warning("no chance-accuracy line: cannot build the evaluation set %s here (%s)", section_json,
                    " ".join(str(err).split())[:200])
        return None
