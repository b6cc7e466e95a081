"""The errors a user can cause. Each message names the offending field, file, row or missing package.

They live in a module of their own, with no heavy imports, so that the command line can catch them
without loading torch or open_clip just to print its help.
"""


class ConfigError(ValueError):
    """A configuration value or key is invalid. The message names the offending field."""


class DataError(ValueError):
    """Bad input data: a missing or corrupt image, an empty caption, a malformed CSV."""


class SetupError(RuntimeError):
    """Something the installation should have provided is missing; the message says how to install it."""
