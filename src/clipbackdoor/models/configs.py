"""Model architectures by name: ours (``configs/models/*.json``, or any file passed to
``add_model_config``) and open_clip's."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from clipbackdoor.registry import ConfigError

# Our architectures by name (open_clip keeps its own).
ARCHITECTURES: dict[str, dict[str, Any]] = {}


def add_model_config(path: str | Path) -> list[str]:
    """Register every ``*.json`` architecture in ``path`` (a file or a folder); returns the names added."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    added = []
    for f in files:
        try:
            cfg = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"model config {f}: {err}") from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg", "tokenizer") if k not in cfg]
        if missing:
            raise ConfigError(f"model config {f}: missing {', '.join(missing)}")
        ARCHITECTURES[f.stem] = cfg
        added.append(f.stem)
    return added


def _load_shipped() -> None:
    folder = resources.files("clipbackdoor") / "configs" / "models"
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            ARCHITECTURES[entry.name[:-5]] = json.loads(entry.read_text())


_load_shipped()


def list_models(open_clip_names: bool = True) -> list[str]:
    """Ours (sorted), then open_clip's unless ``open_clip_names`` is false (which spares importing it)."""
    if not open_clip_names:
        return sorted(ARCHITECTURES)
    import open_clip

    return sorted(ARCHITECTURES) + open_clip.list_models()


def model_config(name: str) -> dict[str, Any] | None:
    """The architecture config of ``name`` (ours first, then open_clip's); None if unknown."""
    import open_clip

    return ARCHITECTURES.get(name) or open_clip.get_model_config(name)


def all_model_configs() -> dict[str, dict[str, Any]]:
    """Every known architecture's config, by name (ours override open_clip's of the same name)."""
    import open_clip

    return {**{n: open_clip.get_model_config(n) for n in open_clip.list_models()}, **ARCHITECTURES}
