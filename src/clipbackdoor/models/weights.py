"""Model weights: read from any CLIP layout, written atomically as safetensors, never unpickled unsafely.

Per-epoch weights are ``epoch_<e>.safetensors``: small, safe, and what cleaning runs start from. Reading
accepts our files and the layouts other CLIP code writes (the original CleanCLIP code, OpenAI CLIP,
open_clip; ``convert_state_dict`` lists them), so their models can be evaluated and cleaned. Pickled files
are opened with ``torch.load(weights_only=True)``, which rebuilds only tensors and plain containers: a file
that needs any other Python object is refused, never unpickled. TorchScript archives are refused too.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save

from clipbackdoor.io import atomic_write
from clipbackdoor.models.configs import all_model_configs
from clipbackdoor.registry import ConfigError
from clipbackdoor.rundir import latest_weights

# Where a training checkpoint keeps its weights: ours ({"model", "optimizer", "position", "torch_rng"}),
# and the original CleanCLIP code's and open_clip's ({"epoch", "name", "state_dict", "optimizer", ...}).
_WEIGHTS_ENTRIES = ("model", "state_dict")
# Prefixes that wrappers add to every key: DistributedDataParallel (CleanCLIP saves its DDP model as is)
# and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# OpenAI's TorchScript CLIP state dicts carry these hyper-parameters as tensors; they are not weights.
_OPENAI_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")
# Scalars that some code saves with shape [] and other code with shape [1].
_SCALARS = ("logit_scale", "logit_bias")


def load_pickled(path: str | Path) -> dict[str, Any]:
    """A pickled PyTorch file, read with ``weights_only=True`` (tensors and plain containers only); any
    failure is a one-line ConfigError that says what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # "Detected pickle protocol 4 ...": the load either works or fails with the error read below.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ConfigError(_unreadable(path, err)) from None


#: How torch's safe unpickler names a global it refuses ("GLOBAL argparse.Namespace was not an allowed
#: global", "unsupported GLOBAL posix.system whose module posix is blocked").
_REFUSED_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")
#: Lines of torch's weights-only error that explain torch's options rather than the file.
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)",
                "WeightsUnpickler error:")


def _unreadable(path: Path, err: Exception) -> str:
    """torch's multi-page load errors, as one line that says what is wrong with the file."""
    text = str(err)
    refused = _REFUSED_GLOBAL.search(text)
    if refused:
        return (f"refused to unpickle {path}: it holds code or Python objects that are not allowed "
                f"({refused.group(1)}), and unpickling them could run arbitrary code; use a safetensors file "
                "or a plain state dict of tensors (torch.save(model.state_dict(), ...))")
    if "TorchScript" in text:
        return (f"cannot read {path}: it is a TorchScript archive (like OpenAI's original CLIP files), "
                "not plain weights; use the same model's open_clip weights (open_clip_model.safetensors)")
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    lines = (line.strip() for line in detail.splitlines())
    detail = next((line for line in lines if line and not line.startswith(_BOILERPLATE)), type(err).__name__)
    if "Weights only load failed" in text:
        # The safe unpickler stopped at an instruction it does not run: garbage, or a pickle made otherwise.
        return (f"cannot read checkpoint {path}: not a PyTorch or safetensors file, or pickled data the safe "
                f"loader does not allow ({detail[:200]}); use a safetensors file or a plain state dict of tensors")
    return f"cannot read checkpoint {path}: not a PyTorch or safetensors file, or corrupt ({detail[:200]})"


def save_weights(path: str | Path, model: torch.nn.Module) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(st_save(tensors)))


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with an 8-byte header length, then its JSON header; HF names some ``.bin``.
    with path.open("rb") as f:
        head = f.read(9)
    return path.suffix == ".safetensors" or head[8:9] == b"{"


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a run directory (its latest), a ``.safetensors`` file or a pickled PyTorch file
    (``.pt``, ``.pth``, ``.bin``), in any layout ``convert_state_dict`` knows.

    Raises:
        ConfigError: the file is missing, corrupt, holds pickled Python objects besides tensors (never
            unpickled), is a TorchScript archive, or holds no state dict.
    """
    path = Path(path)
    if path.is_dir():
        path = latest_weights(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    if _is_safetensors(path):
        try:
            raw = st_load_file(path)
        except Exception as err:
            raise ConfigError(f"cannot read weights {path}: {str(err).splitlines()[0][:200]}") from None
    else:
        raw = load_pickled(path)
    return convert_state_dict(raw, str(path))


def convert_state_dict(raw: Any, source: str) -> dict[str, torch.Tensor]:
    """Model weights in open_clip's key layout (which ours is), from any checkpoint layout we read.

    Layouts:
        * a flat state dict: our ``epoch_<e>.safetensors``, open_clip's ``open_clip_model.safetensors``
          and ``open_clip_pytorch_model.bin``, ``torch.save(model.state_dict())``;
        * our training state ``last.pt``: ``{"model", "optimizer", "position", "torch_rng"}``;
        * a training checkpoint of the original CleanCLIP code or of open_clip:
          ``{"epoch", "name", "state_dict", "optimizer", ...}``;
        * keys prefixed with ``module.`` (a DistributedDataParallel model, as CleanCLIP saves it) or
          ``_orig_mod.`` (torch.compile);
        * OpenAI CLIP, and CleanCLIP, whose model code is OpenAI's: same key names as open_clip's ``CLIP``
          (``visual.attnpool.*``, ``transformer.resblocks.*``, ``token_embedding.weight``,
          ``positional_embedding``, ``text_projection``, ``logit_scale``, ``ln_final.*``). The
          ``input_resolution``, ``context_length`` and ``vocab_size`` entries of OpenAI's TorchScript state
          dicts are hyper-parameters and are dropped; float16 weights are cast when loaded.

    Nothing here checks the weights against an architecture; ``load_weights_into`` does.

    Args:
        raw: what ``torch.load`` or safetensors returned.
        source: the file, for error messages.

    Returns:
        ``{name: tensor}``.

    Raises:
        ConfigError: ``raw`` is not a state dict in one of these layouts.
    """
    state = raw
    if isinstance(state, Mapping):
        inner = next((state[k] for k in _WEIGHTS_ENTRIES if isinstance(state.get(k), Mapping)), None)
        state = state if inner is None else inner
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"checkpoint {source} holds no model weights (a state dict, or a checkpoint with "
                          f"{' or '.join(repr(k) for k in _WEIGHTS_ENTRIES)})")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConfigError(f"checkpoint {source} is not a model state dict: entry {key!r} is a "
                              f"{type(value).__name__}, not a tensor")
    weights = dict(state)
    prefix = _wrapper_prefix(weights)
    while prefix:
        weights = {k[len(prefix):]: v for k, v in weights.items()}
        prefix = _wrapper_prefix(weights)
    for key in _OPENAI_NON_WEIGHTS:
        weights.pop(key, None)
    return weights


def _wrapper_prefix(weights: dict[str, torch.Tensor]) -> str | None:
    return next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in weights)), None)


def load_weights_into(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load ``weights`` (any layout ``convert_state_dict`` knows) into ``model``; every tensor must fit.

    Only BatchNorm's ``num_batches_tracked`` counters may be absent (some exporters drop them).

    Raises:
        ConfigError: the weights are another architecture's. The message names the keys that differ and,
            where the shapes identify it, the ``model.name`` the weights fit.
    """
    weights = convert_state_dict(weights, source)
    expected = model.state_dict()
    for key in _SCALARS:
        if key in weights and key in expected and weights[key].numel() == expected[key].numel() == 1:
            weights[key] = weights[key].reshape(expected[key].shape)
    missing = [k for k in expected if k not in weights and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in weights if k not in expected]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(expected[k].shape)}"
              for k in weights if k in expected and weights[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ConfigError(_misfit(source, weights, missing, unexpected, shapes))
    model.load_state_dict(weights, strict=False)


def _misfit(source: str, weights: dict[str, torch.Tensor], missing: list[str], unexpected: list[str],
            shapes: list[str]) -> str:
    def listed(what: str, keys: list[str]) -> str:
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        return f"{what} {keys[:3]}{more}"

    parts = [listed(what, keys) for what, keys in
             (("missing", missing), ("unexpected", unexpected), ("shapes (checkpoint vs model)", shapes)) if keys]
    message = f"checkpoint {source} does not fit the model: {'; '.join(parts)}"
    names = architectures_fitting(weights)
    if names:
        message += f". Its weights fit model.name={' or '.join(names)}"
        if any(n.endswith("-quickgelu") for n in names):
            message += " (models trained by OpenAI or the original CleanCLIP code need the -quickgelu one)"
    return message


# -- telling an architecture from its weights ---------------------------------------------------------------


def architectures_fitting(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the CLIP architectures (ours and open_clip's) whose towers have the shapes of ``weights``.

    Compares the embedding size, the text tower's width and depth, and the image tower's kind, depth,
    width, patch and image size. That tells RN50 from RN101 and ViT-B-32 from ViT-B-16, but not activations:
    ``RN50`` and ``RN50-quickgelu`` have the same weights and are both returned. Empty when the weights are
    not a CLIP model in open_clip's layout, or no architecture matches.
    """
    target = _weights_signature(weights)
    if target is None:
        return []
    configs = all_model_configs()
    return sorted(n for n, cfg in configs.items() if cfg and _config_signature(cfg) == target)


def _numbered_blocks(weights: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many numbered blocks sit under ``prefix`` (``transformer.resblocks.`` -> 12 for CLIP)."""
    return len({k[len(prefix):].split(".", 1)[0] for k in weights if k.startswith(prefix)})


def _weights_signature(w: Mapping[str, torch.Tensor]) -> tuple | None:
    try:
        text = (w["text_projection"].shape[-1], w["ln_final.weight"].shape[0],
                _numbered_blocks(w, "transformer.resblocks."))
        if "visual.attnpool.positional_embedding" in w:  # ModifiedResNet: attention pooling on a 1/32 grid
            grid = math.isqrt(w["visual.attnpool.positional_embedding"].shape[0] - 1)
            layers = tuple(_numbered_blocks(w, f"visual.layer{i}.") for i in range(1, 5))
            return (*text, "resnet", layers, w["visual.layer1.0.conv1.weight"].shape[0], grid * 32)
        patch = w["visual.conv1.weight"].shape[-1]  # ViT: patch grid plus a class token
        grid = math.isqrt(w["visual.positional_embedding"].shape[0] - 1)
        layers = _numbered_blocks(w, "visual.transformer.resblocks.")
        return (*text, "vit", layers, w["visual.conv1.weight"].shape[0], patch, grid * patch)
    except (KeyError, IndexError, ValueError):
        return None


def _config_signature(cfg: dict[str, Any]) -> tuple | None:
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if v.get("timm_model_name") or t.get("hf_model_name") or "multimodal_cfg" in cfg or "embed_dim" not in cfg:
        return None  # towers from timm or Hugging Face, and CoCa's decoder, have other key layouts
    # open_clip's CLIPVisionCfg / CLIPTextCfg defaults for keys a config leaves out
    text = (cfg["embed_dim"], t.get("width", 512), t.get("layers", 12))
    layers, width, size = v.get("layers", 12), v.get("width", 768), v.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    if isinstance(layers, (list, tuple)):
        return (*text, "resnet", tuple(layers), width, size)
    patch = v.get("patch_size") or 16
    return (*text, "vit", layers, width, patch, size // patch * patch)
