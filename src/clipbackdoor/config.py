"""Experiment configuration: typed sections, YAML layering and dotted ``key=value`` overrides.

Layering follows timm's "YAML as defaults" with torchtune's override syntax: dataclass defaults, then a
YAML file (a path or a shipped experiment name), then ``section.key=value`` overrides from the command line.
Component sections (datasets, attacks, models) are plain dicts with a ``name``; they are checked against
the registered constructor when built, so unknown keys fail there with the component's valid keys.
Every run writes the fully resolved config as ``config.yaml`` before doing any work.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from clipbackdoor.errors import did_you_mean
from clipbackdoor.registry import ConfigError


def _synthetic(split: str, num_samples: int) -> dict[str, Any]:
    return {"name": "synthetic", "split": split, "num_samples": num_samples}


@dataclass
class DataConfig:
    """Where the training pairs and the zero-shot evaluation images come from."""

    train: dict[str, Any] = field(default_factory=lambda: _synthetic("train", 20000))
    eval: dict[str, Any] = field(default_factory=lambda: _synthetic("test", 2000))
    text_augment: dict[str, Any] = field(default_factory=lambda: {"name": "eda"})
    image_augment: dict[str, Any] = field(default_factory=lambda: {"name": "autoaugment"})
    # Clean pairs held out of training; their CLIP loss is logged as ``val_loss`` at every evaluation, the
    # model-selection signal a defender without the trigger or test labels can use.
    validation: dict[str, Any] | None = None
    # EDA views are fixed per row by default, as in CleanCLIP; "epoch" draws a new one every epoch.
    text_augment_per: str = "row"
    num_workers: int = 0
    # Page-locked host batches and non-blocking copies to a CUDA device (ignored on the CPU).
    pin_memory: bool = True


@dataclass
class PoisonConfig:
    """How many training pairs carry the trigger. ``budget`` >= 1 is a count, below 1 a rate."""

    budget: float = 0.0
    seed: int | None = None  # None: the experiment seed
    manifest: str | None = None  # reuse an existing poison_manifest.json instead of drawing one


@dataclass
class InitConfig:
    """Start from a checkpoint (cleaning) instead of random weights (pre-training)."""

    checkpoint: str | None = None
    # Cleaning starts with fresh AdamW moments by default, so its configured weight decay really applies
    # (the original code silently inherited the pre-training optimizer state).
    inherit_optimizer: bool = False


@dataclass
class WandbConfig:
    """Weights & Biases settings, used where ``train.report_to`` names wandb (docs/loggers.md)."""

    project: str = "clipbackdoor"
    entity: str | None = None  # None: the logged-in user's default entity
    mode: str = "online"  # online | offline (synced later with `wandb sync`) | disabled
    name: str | None = None  # None: the run directory's name
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    # torch's fused AdamW kernel (CUDA and CPU): one kernel per parameter group for the whole update instead
    # of many; the same update up to float rounding. Off: torch's default (multi-tensor kernels on CUDA).
    fused_optimizer: bool = False
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant
    # Reproduce the original scheduler's one-epoch step offset (it skips the warm-up of cleaning runs).
    legacy_step_offset: bool = False
    grad_clip: float | None = None
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 (autocast over the forward pass; losses in fp32)
    # TF32 matmuls and convolutions on Ampere and newer GPUs (the original code enables them too).
    tf32: bool = True
    # NHWC memory layout for convolutional image towers (RN50): faster convolutions under bf16.
    channels_last: bool = False
    # torch.compile the model (first steps are slow while it compiles; worth it for long runs).
    compile: bool = False
    # Batch-norm statistics over the global batch in DDP (CUDA only); the original code keeps them per GPU.
    sync_batchnorm: bool = False
    threads: int | None = None
    log_every: int = 10
    checkpoint_every_steps: int | None = None
    keep_epoch_checkpoints: bool = True
    # Keep checkpoints/last.pt (weights and optimizer state, for resuming) once the run is complete; false
    # keeps only the final weights, which is all a finished cleaning run in a sweep needs.
    keep_last_state: bool = True
    progress: bool = True
    # Experiment loggers that receive every metrics.jsonl record too: tensorboard, wandb (docs/loggers.md).
    report_to: list[str] = field(default_factory=list)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class EvalConfig:
    batch_size: int = 500
    # Trigger placements and noise for ASR come from this seed, so repeated evaluations see the same
    # triggered images; several draws give a mean and a spread.
    asr_seed: int = 1234
    asr_draws: int = 1
    every_epoch: bool = True
    max_images: int | None = None


@dataclass
class ExperimentConfig:
    seed: int = 0
    model: dict[str, Any] = field(default_factory=lambda: {"name": "tiny-clip"})
    data: DataConfig = field(default_factory=DataConfig)
    attack: dict[str, Any] = field(default_factory=lambda: {"name": "badnet", "target": "banana"})
    poison: PoisonConfig = field(default_factory=PoisonConfig)
    objective: dict[str, Any] = field(default_factory=lambda: {"clip_weight": 1.0, "inmodal_weight": 0.0})
    defense: dict[str, Any] | None = None
    init: InitConfig = field(default_factory=InitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------------------
# building from plain dicts


# Keys that change how a run executes but not what it computes (beyond float rounding, as the device
# does); a resumed run may differ in them. train.fused_optimizer is one: the run's own setting picks the
# AdamW kernel even over a loaded state (train/optim.py), and run directories written before the key
# existed still match their configs.
EXECUTION_KEYS = frozenset({
    ("train", "progress"), ("train", "threads"), ("data", "num_workers"), ("train", "device"),
    ("data", "pin_memory"), ("train", "fused_optimizer"),
    # Where the records go besides metrics.jsonl: a run resumed with other loggers is the same run.
    ("train", "report_to"), ("train", "wandb"),
})


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_scalar(value: Any, tp: Any, where: str) -> Any:
    """Coerce YAML scalars to the annotated type; reject values of the wrong kind with the field's name."""
    text = str(tp)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be null")
    if text.startswith("dict") or "dict[" in text:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is bool or text.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int or text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float or text.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if text.startswith("list"):
        # A command-line override gives a comma-separated string (train.report_to=tensorboard,wandb), a
        # YAML file a list; both become a list of names.
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{where}: expected a list of names (a,b or [a, b]), got {value!r}")
        return [v.strip() for v in items if v.strip()]
    if tp is str or text.startswith("str"):
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        hint = did_you_mean(str(unknown[0]), names, prefix)
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + str(k) for k in unknown)}{hint}; "
            f"valid keys{' in ' + where if where else ''}: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if _is_dataclass_type(tp):
            kwargs[name] = _from_dict(tp, data[name], key)
        else:
            kwargs[name] = _check_scalar(data[name], tp, key)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge. A component section whose ``name`` changes is replaced, not merged, so the
    old component's keys do not leak into the new one."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if (
            isinstance(v, dict)
            and isinstance(out.get(k), dict)
            and not ("name" in v and v.get("name") != out[k].get("name"))
        ):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse value: {err}") from None
    # YAML 1.1 reads "1e-3" as a string; a number is what everyone means.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides. An override that changes a component's ``name`` replaces the whole section
    first (so ``data.train.name=csv data.train.path=x.csv`` does not inherit the synthetic keys), whatever
    the order of the overrides."""
    out = copy.deepcopy(data)
    parsed = [(text, *parse_override(text)) for text in overrides]
    renames = [p for p in parsed if p[1][-1] == "name"]
    for text, path, value in renames + [p for p in parsed if p[1][-1] != "name"]:
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = nxt
        if path[-1] == "name" and node.get("name") not in (None, value):
            node.clear()
        node[path[-1]] = value
    return out


def _shipped_folder():
    return resources.files("clipbackdoor") / "configs" / "experiments"


def shipped_configs() -> list[str]:
    """Names of the shipped experiment configs; one in a subfolder is named ``folder/name``
    (``paper/cc6m-mmcl``)."""
    names: list[str] = []

    def walk(folder, prefix: str) -> None:
        for p in folder.iterdir():
            if p.is_dir():
                walk(p, f"{prefix}{p.name}/")
            elif p.name.endswith(".yaml"):
                names.append(prefix + p.name[:-5])

    walk(_shipped_folder(), "")
    return sorted(names)


def read_yaml(path_or_name: str | Path) -> dict[str, Any]:
    """Read a YAML config from a path, or a shipped experiment by name (see ``shipped_configs``)."""
    path = Path(path_or_name)
    if not path.exists():
        shipped = _shipped_folder()
        parts = f"{path_or_name}.yaml".split("/")
        for part in parts:
            shipped = shipped / part
        if ".." in parts or not shipped.is_file():
            raise ConfigError(
                f"config {str(path_or_name)!r} is neither a file nor a shipped config "
                f"({', '.join(shipped_configs())})"
            )
        text = shipped.read_text()
        origin = str(path_or_name)
    else:
        text = read_text_file(path)
        origin = str(path)
    return parse_yaml_mapping(text, origin)


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file; a file that cannot be read or is not UTF-8 is a ConfigError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8"
        ) from None


def parse_yaml_mapping(text: str, origin: str) -> dict[str, Any]:
    """A YAML document whose top level is a mapping; anything else is a one-line ConfigError naming
    ``origin`` (and the line, where YAML knows it). Tags that would build Python objects
    (``!!python/object/apply:...``) are refused by the safe loader, never executed."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: top level must be a mapping, got {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line error, as one line: where, and what."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    text = f"{context}, {problem}" if context and problem != context else problem
    if "constructor for the tag" in text:
        text += " (tags that build Python objects are refused, never run)"
    return "invalid YAML: " + where + " ".join(text.split())


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Defaults <- ``base`` (e.g. an upstream run's config) <- YAML file <- overrides."""
    data = ExperimentConfig().to_dict()
    if base:
        data = _merge(data, base)
    file_data = read_yaml(path) if path is not None else {}
    data = apply_overrides(_merge(data, file_data), overrides or [])
    _check_defense_keys(data, file_data, overrides or [], path)
    return config_from_dict(data)


def _check_defense_keys(data: dict[str, Any], file_data: dict[str, Any], overrides: list[str], path: Any) -> None:
    """A key the defense sets may not be set to another value by the user: the defense would silently
    overwrite it. (The same value is fine: a paper config may spell out what the defense implies.)"""
    defense = data.get("defense")
    if not defense:
        return
    from clipbackdoor.defenses import owned_settings

    section = {"name": defense} if isinstance(defense, str) else defense
    owned = owned_settings(section)
    set_here = [(str(path), key) for key in _dotted_keys(file_data)] + [
        ("override", o.split("=", 1)[0].strip()) for o in overrides]
    for origin, key in set_here:
        for owned_key, value in owned.items():
            related = key == owned_key or key.startswith(owned_key + ".") or owned_key.startswith(key + ".")
            if related and _lookup(data, owned_key) != value:
                raise ConfigError(
                    f"{origin}: {key} conflicts with defense {section.get('name')!r}, which sets {owned_key} to "
                    f"{value!r}; set the defense's options instead (defense.<option>=...)"
                )


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _dotted_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        out += _dotted_keys(value, dotted + ".") if isinstance(value, dict) and key != "defense" else [dotted]
    return out


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    from clipbackdoor.defenses import apply_defense

    if isinstance(data.get("defense"), str):
        data = {**data, "defense": {"name": data["defense"]}}
    cfg = _from_dict(ExperimentConfig, apply_defense(data), "")
    validate(cfg)
    return cfg


def validate(cfg: ExperimentConfig) -> None:
    """Reject impossible values early, naming the field."""
    t = cfg.train
    checks = [
        (t.epochs >= 0, "train.epochs", "must be >= 0"),
        (t.batch_size >= 1, "train.batch_size", "must be >= 1"),
        (t.lr >= 0, "train.lr", "must be >= 0"),
        (t.weight_decay >= 0, "train.weight_decay", "must be >= 0"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1/beta2", "must be in [0, 1)"),
        (t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0"),
        (t.schedule in ("cosine", "constant"), "train.schedule", "must be cosine or constant"),
        (t.precision in ("fp32", "bf16"), "train.precision", "must be fp32 or bf16"),
        (t.log_every >= 1, "train.log_every", "must be >= 1"),
        (t.grad_clip is None or t.grad_clip > 0, "train.grad_clip", "must be > 0 or null"),
        (t.threads is None or t.threads >= 1, "train.threads", "must be >= 1 or null"),
        (t.checkpoint_every_steps is None or t.checkpoint_every_steps >= 1,
         "train.checkpoint_every_steps", "must be >= 1 or null"),
        (cfg.poison.budget >= 0, "poison.budget", "must be >= 0 (a count >= 1 or a rate < 1)"),
        (cfg.poison.budget < 1 or float(cfg.poison.budget).is_integer(), "poison.budget",
         "a count must be a whole number"),
        (cfg.eval.batch_size >= 1, "eval.batch_size", "must be >= 1"),
        (cfg.eval.asr_draws >= 1, "eval.asr_draws", "must be >= 1"),
        (cfg.eval.max_images is None or cfg.eval.max_images >= 1, "eval.max_images", "must be >= 1 or null"),
        (cfg.data.num_workers >= 0, "data.num_workers", "must be >= 0"),
        (cfg.data.text_augment_per in ("row", "epoch"), "data.text_augment_per", "must be row or epoch"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise ConfigError(f"{key}: {msg}")
    _check_wandb_mode(t)
    for key in ("model", "attack"):
        section = getattr(cfg, key)
        if "name" not in section:
            raise ConfigError(f"{key}: missing 'name'")
    for key in ("train", "eval", "validation"):
        section = getattr(cfg.data, key)
        if section is not None and "name" not in section:
            raise ConfigError(f"data.{key}: missing 'name'")


def _check_wandb_mode(t: TrainConfig) -> None:
    # The logger names are checked with the other registered names (train.run.check_components): the
    # registry lives in the training layer, which this module must not import.
    if t.wandb.mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"train.wandb.mode: must be online, offline or disabled, got {t.wandb.mode!r}")


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
