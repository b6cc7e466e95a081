"""Training states: ``last.pt`` (model, optimizer, position, RNG, objective), for resuming exactly.

Written atomically with ``torch.save``; read with the same safe loader as weights
(``models.weights.load_pickled``), which never unpickles anything but tensors and plain containers. Model
weights themselves (``epoch_<e>.safetensors`` and other programs' files) are ``models.weights``' business.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from clipbackdoor.io import atomic_write
from clipbackdoor.models.weights import load_pickled as load_state  # noqa: F401  (a state is read like weights)
from clipbackdoor.registry import ConfigError
from clipbackdoor.rundir import CHECKPOINT_DIR, LAST


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    def write(f):
        buf = io.BytesIO()
        torch.save(state, buf)
        f.write(buf.getvalue())

    atomic_write(path, write)


def resolve_state_path(path: str | Path) -> Path:
    """The full training state behind ``init.checkpoint`` (a run directory or a ``.pt`` file), needed
    when a cleaning run inherits the optimizer."""
    path = Path(path)
    if path.is_dir():
        return path / CHECKPOINT_DIR / LAST
    if path.suffix == ".safetensors":
        raise ConfigError(
            f"init.inherit_optimizer needs a training state (.pt or a run directory), not weights: {path}"
        )
    return path
