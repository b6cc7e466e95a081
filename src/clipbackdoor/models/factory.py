"""CLIP models through open_clip, for every architecture.

Our own architectures are JSON files (``configs/models/*.json``, or any file passed to
``add_model_config``): an open_clip CLIP config plus the ``tokenizer`` it is trained with. The factory
sizes the text tower's vocabulary and end-of-text id from that tokenizer, so a word-level tiny model and the
49k-token BPE models go through the same code. Every other name is handed to ``open_clip.create_model``
(``RN50``, ``ViT-B-32``, ...) with open_clip's tokenizer.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from clipbackdoor.data.registries import TOKENIZERS
from clipbackdoor.data.tokenizers import Tokenizer
from clipbackdoor.registry import ConfigError

log = logging.getLogger(__name__)

_CONFIGS: dict[str, dict[str, Any]] = {}


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
        _CONFIGS[f.stem] = cfg
        added.append(f.stem)
    return added


def _load_shipped() -> None:
    folder = resources.files("clipbackdoor") / "configs" / "models"
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            _CONFIGS[entry.name[:-5]] = json.loads(entry.read_text())


_load_shipped()


def list_models() -> list[str]:
    import open_clip

    return sorted(_CONFIGS) + open_clip.list_models()


@dataclass
class ModelBundle:
    model: torch.nn.Module
    tokenizer: Tokenizer
    image_size: int
    name: str


def _image_size(model: torch.nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def create_model(name: str, pretrained: str | None = None, tokenizer: dict[str, Any] | None = None) -> ModelBundle:
    """Build a CLIP model and its tokenizer.

    Args:
        name: one of ``list_models()``.
        pretrained: open_clip weights tag or file (open_clip architectures only; our own checkpoints are
            loaded with ``init.checkpoint``).
        tokenizer: override the tokenizer section of a JSON architecture.

    Example:
        >>> bundle = create_model("tiny-clip")
        >>> bundle.model.encode_image(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 64])
    """
    import open_clip

    if name in _CONFIGS:
        cfg = copy.deepcopy(_CONFIGS[name])
        tok_section = tokenizer or cfg.pop("tokenizer")
        cfg.pop("tokenizer", None)
        tok = TOKENIZERS.build(tok_section, where="model.tokenizer")
        text_cfg = cfg["text_cfg"]
        text_cfg["vocab_size"] = tok.vocab_size
        text_cfg["context_length"] = tok.context_length
        if tok.eot_id is not None:
            # Pool at the end-of-text token by id, so it need not be the largest id (as argmax assumes).
            text_cfg["pool_type"] = "eos"
            text_cfg["eos_id"] = tok.eot_id
        if pretrained:
            raise ConfigError(f"model.pretrained: {name!r} has no pretrained weights; use init.checkpoint")
        model = open_clip.model.CLIP(**cfg)
    elif name in open_clip.list_models():
        model = open_clip.create_model(name, pretrained=pretrained)
        tok = TOKENIZERS.build(tokenizer or {"name": "open_clip", "model_name": name}, where="model.tokenizer")
    else:
        raise ConfigError(f"model.name: unknown architecture {name!r}; see `clipbackdoor list models`")
    return ModelBundle(model=model, tokenizer=tok, image_size=_image_size(model), name=name)
