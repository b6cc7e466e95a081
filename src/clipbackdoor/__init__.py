"""clipbackdoor: poison, pre-train, clean and evaluate CLIP models."""

from importlib import metadata

try:
    __version__ = metadata.version("clipbackdoor")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
