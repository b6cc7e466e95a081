"""CLIP models through open_clip, for every architecture.

Our own architectures are JSON files (``configs/models/*.json``, or any file passed to
``add_model_config``): an open_clip CLIP config plus the ``tokenizer`` it is trained with. The factory
sizes the text tower's vocabulary and end-of-text id from that tokenizer, so a word-level tiny model and the
49k-token BPE models go through the same code. Every other name is handed to ``open_clip.create_model``
(``RN50``, ``ViT-B-32``, ...) with open_clip's tokenizer.

Weights (``model.pretrained``) are read only from local files, through ``models.weights``' safe reader,
never through open_clip's loader or a download. Models trained by OpenAI or by the original CleanCLIP code
use QuickGELU: they are ``RN50-quickgelu`` (``ViT-B-32-quickgelu``, ...), not ``RN50``. Both have the same
weights, so loading cannot tell them apart (see docs/checkpoints.md).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipbackdoor.data.registries import TOKENIZERS
from clipbackdoor.data.tokenizers import Tokenizer
from clipbackdoor.errors import did_you_mean
from clipbackdoor.models.configs import ARCHITECTURES, model_config
from clipbackdoor.models.weights import load_weights_into, read_weights
from clipbackdoor.registry import ConfigError

log = logging.getLogger(__name__)

@dataclass
class ModelBundle:
    model: torch.nn.Module
    tokenizer: Tokenizer
    image_size: int
    name: str


def _image_size(model: torch.nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def unknown_architecture(name: object, where: str) -> ConfigError:
    import open_clip

    hint = did_you_mean(str(name), [*ARCHITECTURES, *open_clip.list_models()])
    return ConfigError(f"{where}.name: unknown architecture {name!r}{hint}; see `clipbackdoor list models` "
                       "(`--open-clip` for open_clip's)")


def model_image_size(name: str) -> int:
    """The input resolution of architecture ``name``, read from its config without building the model."""
    cfg = model_config(name)
    if cfg is None:
        raise unknown_architecture(name, "model")
    size = cfg.get("vision_cfg", {}).get("image_size", 224)  # open_clip's CLIPVisionCfg default
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def create_model(name: str, pretrained: str | None = None, tokenizer: dict[str, Any] | None = None) -> ModelBundle:
    """Build a CLIP model and its tokenizer.

    Args:
        name: one of ``list_models()``.
        pretrained: weights to start from: a local file or run directory in any layout
            ``models.weights.read_weights`` reads (ours, open_clip's, OpenAI's, the original CleanCLIP
            code's), for any architecture; or, for an open_clip architecture, an open_clip tag (``openai``,
            ``laion2b_s34b_b79k``, ...) whose weights are already in the local Hugging Face or open_clip
            cache. Nothing is downloaded.
        tokenizer: override the tokenizer section of a JSON architecture.

    Raises:
        ConfigError: unknown architecture; ``pretrained`` is neither a file nor a cached tag; the weights
            do not fit the architecture.

    Example:
        >>> bundle = create_model("tiny-clip")
        >>> bundle.model.encode_image(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 64])
    """
    import open_clip

    if name in ARCHITECTURES:
        cfg = copy.deepcopy(ARCHITECTURES[name])
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
        model = open_clip.model.CLIP(**cfg)
    elif name in open_clip.list_models():
        # Built from scratch: open_clip's own weight loading would torch.load without weights_only.
        model = open_clip.create_model(name)
        tok = TOKENIZERS.build(tokenizer or {"name": "open_clip", "model_name": name}, where="model.tokenizer")
    else:
        raise unknown_architecture(name, "model")
    if pretrained:
        path = _pretrained_file(name, str(pretrained))
        load_weights_into(model, read_weights(path), str(path))
        log.info("model %s: weights from %s", name, path)
    return ModelBundle(model=model, tokenizer=tok, image_size=_image_size(model), name=name)


def check_model_section(section: Mapping[str, Any], where: str = "model") -> None:
    """The checks of ``create_model`` on a ``model`` section (a known architecture, known keys, a known
    tokenizer) without building the model."""
    import open_clip

    from clipbackdoor.registry import check_kwargs

    check_kwargs(create_model, section, where)
    name = section.get("name")
    if name not in ARCHITECTURES and name not in open_clip.list_models():
        raise unknown_architecture(name, where)
    if section.get("tokenizer"):
        TOKENIZERS.check(section["tokenizer"], f"{where}.tokenizer")


def _pretrained_file(name: str, pretrained: str) -> Path:
    """The local file behind ``model.pretrained``: the path itself, or a cached open_clip tag's weights."""
    import open_clip

    path = Path(pretrained).expanduser()
    if path.exists():
        return path
    tag_cfg = {} if name in ARCHITECTURES else open_clip.get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        tags = [] if name in ARCHITECTURES else open_clip.list_pretrained_tags_by_model(name)
        known = f" (open_clip tags of {name}: {', '.join(tags)})" if tags else ""
        raise ConfigError(f"model.pretrained: {pretrained!r} is neither a local file nor an open_clip tag of "
                          f"{name}{known}")
    cached = _cached_open_clip_weights(tag_cfg)
    if cached is None:
        where = tag_cfg.get("hf_hub") or tag_cfg.get("url")
        raise ConfigError(
            f"model.pretrained: open_clip's {name} {pretrained!r} weights are not in the local cache, and "
            f"nothing is downloaded here; fetch them where there is network ({where}) and pass the file's path"
        )
    if tag_cfg.get("quick_gelu") and not (open_clip.get_model_config(name) or {}).get("quick_gelu"):
        log.warning("model.pretrained: %s %r was trained with QuickGELU; model.name=%s-quickgelu matches it",
                    name, pretrained, name)
    return cached


def _cached_open_clip_weights(tag_cfg: dict[str, Any]) -> Path | None:
    """Where open_clip would have cached a tag's weights (Hugging Face hub, else ~/.cache/clip), if there."""
    hub = tag_cfg.get("hf_hub")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        repo, filename = os.path.split(hub)
        # As open_clip: a safetensors twin first; a bare repo id means its default weights files.
        if not filename:
            names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        elif filename.endswith((".bin", ".pth")):
            names = [filename[:-4] + ".safetensors", filename]
        else:
            names = [filename]
        for file in names if try_to_load_from_cache else []:
            hit = try_to_load_from_cache(repo, file)
            if isinstance(hit, str):
                return Path(hit)
    url = tag_cfg.get("url")
    if url:
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return path
    return None


