"""Checkpoints: written atomically, read without unpickling arbitrary objects.

``last.pt`` is the full training state (model, optimizer, position, RNG) for resuming; it is written with
``torch.save`` and read with ``weights_only=True``, which only admits tensors and plain containers. Per-epoch
weights are ``epoch_<e>.safetensors``: small, safe, and what cleaning runs start from.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from clipbackdoor.io import atomic_write
from clipbackdoor.registry import ConfigError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def epoch_weights_name(epoch: int) -> str:
    return f"epoch_{epoch}.safetensors"


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    def write(f):
        buf = io.BytesIO()
        torch.save(state, buf)
        f.write(buf.getvalue())

    atomic_write(path, write)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ConfigError(f"cannot read checkpoint {path}: {err}") from None


def save_weights(path: str | Path, model: torch.nn.Module) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(st_save(tensors)))


def latest_weights(run_dir: Path) -> Path:
    """A run's newest weights: ``last.pt``, or the last epoch's weights of a run that kept no state."""
    last = run_dir / CHECKPOINT_DIR / LAST
    if last.is_file():
        return last
    # Numeric order (epoch_10 after epoch_9); files named otherwise are not epoch checkpoints.
    numbered = [(int(p.stem[6:]), p) for p in (run_dir / CHECKPOINT_DIR).glob("epoch_*.safetensors")
                if p.stem[6:].isdigit()]
    epochs = [p for _, p in sorted(numbered)]
    if not epochs:
        raise ConfigError(f"{run_dir} holds no checkpoint ({CHECKPOINT_DIR}/{LAST} or epoch_<n>.safetensors)")
    return epochs[-1]


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a ``.safetensors`` file, a ``.pt`` training state, or a run directory (its
    latest state)."""
    path = Path(path)
    if path.is_dir():
        path = latest_weights(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ConfigError(f"checkpoint not found: {path}")
        try:
            return st_load(path.read_bytes())
        except Exception as err:
            raise ConfigError(f"cannot read weights {path}: {err}") from None
    state = load_state(path)
    return state["model"] if "model" in state else state


def load_weights_into(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    # DDP-saved checkpoints prefix every key with "module."
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches: a checkpoint of another architecture
        raise ConfigError(f"checkpoint {source} does not fit the model: {err}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"checkpoint {source} does not fit the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


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
