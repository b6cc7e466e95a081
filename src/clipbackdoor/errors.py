"""The errors a user can cause. Each message names the offending field, file, row or missing package.

They live in a module of their own, with no heavy imports, so that the command line can catch them
without loading torch or open_clip just to print its help.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A configuration value or key is invalid. The message names the offending field."""


class DataError(ValueError):
    """Bad input data: a missing or corrupt image, an empty caption, a malformed CSV."""


class SetupError(RuntimeError):
    """Something the installation should have provided is missing; the message says how to install it."""


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``word``, or ``""``.

    Appended to the one-line errors for unknown commands, options, config keys and registry names: a typo
    is the commonest way to get them, and the right spelling is the whole fix. ``prefix`` (a config
    section, ``"train."``) is put before the suggestion but not matched on.
    """
    matches = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
    if not matches:
        return ""
    return f" (did you mean {' or '.join(repr(prefix + m) for m in matches)}?)"
