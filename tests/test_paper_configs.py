"""The paper's recipes as shipped configs (``configs/experiments/paper/*`` and the sweeps
``paper-cc3m-cleaning``, ``paper-cc6m-cleaning``).

Each is checked the way a user would meet it, without opening a data file or building RN50: it loads with
its placeholder paths, every component section fits its registered constructor, its numbers are those of
system.md (1.7 table, 2.3 grids), the resolved cleaning configs inherit the right model and checkpoint,
and the launch command it starts with parses with the real CLI and appears in docs/paper-scale.md.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from clipbackdoor.cli import build_parser, main
from clipbackdoor.config import ExperimentConfig, dump_config, load_config, shipped_configs
from clipbackdoor.experiments.stages import clean_config
from clipbackdoor.experiments.sweep import expand, job_config, load_spec, shipped_sweeps
from clipbackdoor.poison.badnet import default_patch_size
from clipbackdoor.registry import check_kwargs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "paper-scale.md"

# system.md 1.7: lr 1e-3, weight decay 0.1, 10,000 warm-up steps, 64 epochs; global batch 2048 (MMCL) and
# 1024 (MMCL+SSL) in the CC6M README; 1,500 poisons in CC3M, 3,000 in CC6M (1.2).
PRETRAIN = {
    "paper/cc3m-mmcl": {"budget": 1500, "batch": 2048, "inmodal": 0.0, "dataset": "cc3m"},
    "paper/cc3m-mmcl-ssl": {"budget": 1500, "batch": 1024, "inmodal": 1.0, "dataset": "cc3m"},
    "paper/cc6m-mmcl": {"budget": 3000, "batch": 2048, "inmodal": 0.0, "dataset": "cc6m"},
    "paper/cc6m-mmcl-ssl": {"budget": 3000, "batch": 1024, "inmodal": 1.0, "dataset": "cc6m"},
}
# system.md 2.3: cleaning with the SSL term at batch 64 over one grid, MMCL-only at batch 128 over another.
SSL_LRS = {5e-5, 1e-4, 5e-4, 1e-3}
MMCL_LRS = {1e-4, 5e-4, 1e-3, 5e-3}
SSL_WEIGHTS = {1, 2, 4, 6, 8}
CLEANING = {
    "paper/clean-cleanclip": {"defense": "cleanclip", "batch": 64, "lrs": SSL_LRS, "objective": (1.0, 1.0)},
    "paper/clean-ssl": {"defense": "ssl", "batch": 64, "lrs": SSL_LRS, "objective": (0.0, 1.0)},
    "paper/clean-mmcl": {"defense": "mmcl", "batch": 128, "lrs": MMCL_LRS, "objective": (1.0, 0.0)},
}
# The sweeps: which data they clean with and which pre-training epoch they clean (None: the last).
SWEEPS = {
    "paper-cc3m-cleaning": {"dataset": "cc3m", "epochs": {"MMCL": None, "MMCL+SSL": None}},
    "paper-cc6m-cleaning": {"dataset": "cc6m", "epochs": {"MMCL": 21, "MMCL+SSL": 36}},
}
# Arguments the framework passes to constructors itself; a config setting one would be a mistake.
FRAMEWORK_KWARGS = {"image_size", "experiment_seed", "where", "default_templates", "rank", "world_size"}


# -- helpers --------------------------------------------------------------------------------------------


def shipped_text(kind: str, name: str) -> str:
    node = resources.files("clipbackdoor") / "configs" / kind
    for part in f"{name}.yaml".split("/"):
        node = node / part
    return node.read_text()


def header_commands(text: str) -> list[str]:
    """The commands of a file's leading comment block: lines that start with a program, joined across
    trailing backslashes."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    commands, current = [], None
    for line in lines:
        if current is not None:
            current += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                commands.append(current)
                current = None
        elif re.match(r"(torchrun|clipbackdoor|python -m clipbackdoor)\b", line):
            if line.endswith("\\"):
                current = line.rstrip("\\").strip()
            else:
                commands.append(line)
    return commands


def clipbackdoor_argv(command: str) -> list[str]:
    """The arguments after ``clipbackdoor`` / ``-m clipbackdoor``."""
    tokens = shlex.split(command)
    if tokens[0] == "clipbackdoor":
        return tokens[1:]
    i = tokens.index("-m")
    assert tokens[i + 1] == "clipbackdoor", command
    return tokens[i + 2:]


def normalized(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


def check_section(fn, section: dict, where: str) -> None:
    """The keys of ``section`` (less ``name``) are accepted by ``fn`` and none is the framework's."""
    kwargs = {k: v for k, v in section.items() if k != "name"}
    check_kwargs(fn, kwargs, where)
    assert not FRAMEWORK_KWARGS & set(kwargs), f"{where}: sets framework arguments {FRAMEWORK_KWARGS & set(kwargs)}"


def check_components(cfg: ExperimentConfig) -> None:
    """Every component section against its registered constructor, without opening any file."""
    import clipbackdoor.data.augment_image  # noqa: F401  (registers the augmentations)
    import clipbackdoor.data.augment_text  # noqa: F401
    from clipbackdoor.data.registries import DATASETS, EVAL_DATASETS, IMAGE_AUGMENTATIONS, TEXT_AUGMENTATIONS
    from clipbackdoor.data.zeroshot_metadata import resolve_classnames, resolve_templates
    from clipbackdoor.defenses import DEFENSES
    from clipbackdoor.models import create_model, list_models
    from clipbackdoor.objectives import build_objective
    from clipbackdoor.poison import ATTACKS

    assert cfg.model["name"] in list_models()
    check_section(create_model, cfg.model, "model")
    for key in ("train", "validation"):
        section = getattr(cfg.data, key)
        if section is not None:
            check_section(DATASETS.get(section["name"]), section, f"data.{key}")
    check_section(EVAL_DATASETS.get(cfg.data.eval["name"]), cfg.data.eval, "data.eval")
    check_section(TEXT_AUGMENTATIONS.get(cfg.data.text_augment["name"]), cfg.data.text_augment, "data.text_augment")
    check_section(IMAGE_AUGMENTATIONS.get(cfg.data.image_augment["name"]), cfg.data.image_augment,
                  "data.image_augment")
    check_section(ATTACKS.get(cfg.attack["name"]), cfg.attack, "attack")
    build_objective(cfg.objective)
    if cfg.defense:
        DEFENSES.build(cfg.defense, "defense")
    if cfg.data.eval["name"] == "labels_csv":
        classes = resolve_classnames(cfg.data.eval.get("classnames", "imagenet"))
        templates = resolve_templates(cfg.data.eval.get("templates", "openai_imagenet"))
        ATTACKS.build(cfg.attack, "attack", default_templates=templates)
        assert len(classes) == 1000 and len(templates) == 80
        assert classes.index(cfg.attack["target"]) == 954  # ImageNet's banana, the original's hard-coded target


def write_upstream(run_dir: Path, cfg: ExperimentConfig, epoch: int | None = None) -> None:
    """A pre-training run directory as far as cleaning reads it: config.yaml (and the epoch's weights file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    if epoch is not None:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / f"epoch_{epoch}.safetensors").touch()


# -- what is shipped ------------------------------------------------------------------------------------


def test_every_paper_recipe_is_shipped_listed_and_packaged(capsys):
    names = [n for n in shipped_configs() if n.startswith("paper/")]
    assert set(names) == set(PRETRAIN) | set(CLEANING)
    assert set(SWEEPS) <= set(shipped_sweeps())
    assert main(["list", "configs", "--names"]) == 0
    listed = capsys.readouterr().out.split()
    assert set(names) <= set(listed) and "mmcl" in listed
    # The wheel carries them: the package-data globs match every shipped config and sweep file.
    package = ROOT / "src" / "clipbackdoor"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["clipbackdoor"]
    packaged = {p for pattern in globs for p in package.glob(pattern)}
    files = [package / "configs" / "experiments" / f"{n}.yaml" for n in names]
    files += [package / "configs" / "sweeps" / f"{n}.yaml" for n in SWEEPS]
    assert all(f.is_file() for f in files)
    assert not [f for f in files if f not in packaged]


@pytest.mark.parametrize("name", sorted(PRETRAIN) + sorted(CLEANING))
def test_paper_config_components_fit_their_constructors(name):
    check_components(load_config(name))


# -- the numbers of system.md ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRETRAIN))
def test_pretraining_recipe_numbers(name):
    want = PRETRAIN[name]
    cfg = load_config(name)
    assert cfg.model["name"] in ("RN50", "RN50-quickgelu") and not cfg.model.get("pretrained")
    assert cfg.attack == {"name": "badnet", "target": "banana", "patch_size": 16, "location": "random"}
    assert cfg.poison.budget == want["budget"] and cfg.poison.manifest is None
    assert cfg.objective == {"clip_weight": 1.0, "inmodal_weight": want["inmodal"]}
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.warmup_steps) == (64, want["batch"], 1e-3, 0.1, 10000)
    assert (t.beta1, t.beta2, t.eps, t.schedule) == (0.9, 0.999, 1e-8, "cosine")
    assert t.precision == "bf16" and t.tf32 and t.keep_epoch_checkpoints
    assert not t.legacy_step_offset and cfg.init.checkpoint is None
    assert cfg.data.train["name"] == "csv" and cfg.data.train["path"] == f"data/{want['dataset']}/train.csv"
    assert cfg.data.eval == {"name": "labels_csv", "path": "data/ImageNet1K/validation",
                             "classnames": "imagenet", "templates": "openai_imagenet"}
    if want["inmodal"]:
        assert cfg.data.text_augment["name"] == "eda" and cfg.data.image_augment["name"] == "autoaugment"
        assert cfg.data.text_augment_per == "row"


@pytest.mark.parametrize("name", sorted(CLEANING))
def test_cleaning_recipe_numbers_and_what_it_inherits(name, tmp_path):
    want = CLEANING[name]
    source = tmp_path / "pretrain-mmcl" / "seed-0"
    upstream = load_config("paper/cc6m-mmcl")
    write_upstream(source, upstream, epoch=21)
    cfg = clean_config(source, name, epoch=21)
    check_components(cfg)
    assert cfg.defense["name"] == want["defense"]
    assert (cfg.objective["clip_weight"], cfg.objective["inmodal_weight"]) == want["objective"]
    t = cfg.train
    assert (t.epochs, t.batch_size, t.weight_decay, t.warmup_steps) == (20, want["batch"], 0.1, 50)
    assert t.schedule == "cosine"
    assert t.lr in want["lrs"] and t.precision == "bf16" and not t.legacy_step_offset
    assert cfg.poison.budget == 0 and not cfg.init.inherit_optimizer
    assert cfg.data.train == {"name": "csv", "path": "data/cc6m/clean_100k.csv", "on_error": "skip"}
    # The model, trigger, evaluation set and seed are the cleaned run's, and so is the starting checkpoint.
    assert (cfg.model, cfg.attack, cfg.data.eval, cfg.seed) == (
        upstream.model, upstream.attack, upstream.data.eval, upstream.seed)
    assert cfg.init.checkpoint == str(source / "checkpoints" / "epoch_21.safetensors")


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_cleaning_sweep_grids(name, tmp_path):
    want = SWEEPS[name]
    spec = load_spec(name)
    jobs = expand(spec)
    pretrain = [j for j in jobs if j.command == "pretrain"]
    assert sorted(j.config for j in pretrain) == [f"paper/{want['dataset']}-mmcl", f"paper/{want['dataset']}-mmcl-ssl"]
    objective_of = {}
    for job in pretrain:
        cfg = job_config(job, tmp_path, spec.threads)
        label = "MMCL+SSL" if cfg.objective["inmodal_weight"] else "MMCL"
        objective_of[job.name] = label
        write_upstream(tmp_path / job.name, cfg, epoch=want["epochs"][label])

    seen: dict[tuple[str, str], set] = {}
    for job in jobs:
        if job.command != "clean":
            continue
        cfg = job_config(job, tmp_path, spec.threads)
        source = objective_of[job.source]
        epoch = want["epochs"][source]
        run = tmp_path / job.source
        assert cfg.init.checkpoint == str(run if epoch is None else run / "checkpoints" / f"epoch_{epoch}.safetensors")
        assert cfg.data.train["path"] == f"data/{want['dataset']}/clean_100k.csv"
        assert cfg.model["name"] in ("RN50", "RN50-quickgelu") and cfg.data.eval["name"] == "labels_csv"
        assert (cfg.train.epochs, cfg.train.warmup_steps, cfg.train.weight_decay, cfg.poison.budget) == (20, 50, 0.1, 0)
        defense = cfg.defense["name"]
        assert cfg.train.batch_size == (128 if defense == "mmcl" else 64)
        seen.setdefault((source, defense), set()).add((cfg.train.lr, cfg.objective["inmodal_weight"]))

    # Both models, each cleaned three ways, over the full grids of system.md 2.3.
    assert set(seen) == {(s, d) for s in ("MMCL", "MMCL+SSL") for d in ("cleanclip", "ssl", "mmcl")}
    for source in ("MMCL", "MMCL+SSL"):
        assert seen[(source, "cleanclip")] == {(lr, float(w)) for lr in SSL_LRS for w in SSL_WEIGHTS}
        assert seen[(source, "ssl")] == {(lr, 1.0) for lr in SSL_LRS}
        assert seen[(source, "mmcl")] == {(lr, 0.0) for lr in MMCL_LRS}
    assert len(jobs) == 2 + 2 * (20 + 4 + 4)


# -- launch commands ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRETRAIN))
def test_pretraining_launch_command_parses(name):
    command = header_commands(shipped_text("experiments", name))[0]
    assert command.startswith("torchrun --nproc_per_node 8 -m clipbackdoor pretrain")
    args = build_parser().parse_args(clipbackdoor_argv(command))
    assert args.command == "pretrain" and args.config == name
    dataset, objective = name.removeprefix("paper/").split("-", 1)
    assert args.out == f"runs/paper-{dataset}/pretrain-{objective}/seed-0"
    check_components(load_config(args.config, args.overrides))


@pytest.mark.parametrize("name", sorted(CLEANING))
def test_cleaning_launch_commands_parse_and_resolve(name, tmp_path, monkeypatch):
    # Resolved exactly as `clipbackdoor clean` does, against stand-ins for the pre-training runs they name.
    monkeypatch.chdir(tmp_path)
    commands = header_commands(shipped_text("experiments", name))
    assert commands and commands[0].startswith("clipbackdoor clean --from runs/paper-cc6m/")
    for command in commands:
        args = build_parser().parse_args(clipbackdoor_argv(command))
        assert args.command == "clean" and args.config == name
        dataset, objective = re.fullmatch(r"runs/paper-(cc[36]m)/pretrain-([a-z-]+)/seed-0", args.source).groups()
        write_upstream(Path(args.source), load_config(f"paper/{dataset}-{objective}"), epoch=args.epoch)
        cfg = clean_config(args.source, args.config, args.overrides, defense=args.defense, epoch=args.epoch)
        check_components(cfg)
        assert cfg.defense["name"] == CLEANING[name]["defense"] and cfg.train.lr in CLEANING[name]["lrs"]
        assert cfg.data.train["path"] == f"data/{dataset}/clean_100k.csv"


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_launch_command_and_its_pretraining_commands(name):
    commands = header_commands(shipped_text("sweeps", name))
    args = build_parser().parse_args(clipbackdoor_argv(commands[0]))
    assert args.command == "sweep" and args.spec == name
    # The torchrun commands it lists write into exactly the directories of the sweep's pre-training runs,
    # so the sweep finds them complete and only cleans them.
    jobs = {str(Path(args.out) / j.name): j.config for j in expand(load_spec(name)) if j.command == "pretrain"}
    listed = {}
    for command in commands[1:]:
        pre = build_parser().parse_args(clipbackdoor_argv(command))
        assert pre.command == "pretrain"
        listed[pre.out] = pre.config
    assert listed == jobs


def test_docs_show_every_launch_command():
    docs = normalized(DOCS.read_text())
    for kind, names in (("experiments", sorted(PRETRAIN) + sorted(CLEANING)), ("sweeps", sorted(SWEEPS))):
        for name in names:
            command = header_commands(shipped_text(kind, name))[0]
            assert normalized(command) in docs, f"docs/paper-scale.md lacks the command of {name}: {command}"


def test_a_checkpoint_of_the_original_code_cleans_with_the_documented_overrides(tmp_path, monkeypatch):
    # No run directory to inherit from: the command line names the model and the evaluation set.
    monkeypatch.chdir(tmp_path)
    command = ("clipbackdoor clean --from /path/to/train_cc6m_poison_mmcl_1e_3/checkpoints/epoch_21.pt "
               "--config paper/clean-cleanclip --out runs/original-cc6m-mmcl-cleaned-cleanclip "
               "model.name=RN50-quickgelu data.eval.name=labels_csv data.eval.path=data/ImageNet1K/validation")
    assert command in normalized(DOCS.read_text())
    args = build_parser().parse_args(clipbackdoor_argv(command))
    checkpoint = tmp_path / "logs" / "checkpoints" / "epoch_21.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    cfg = clean_config(checkpoint, args.config, args.overrides, defense=args.defense, epoch=args.epoch)
    check_components(cfg)
    assert cfg.model == load_config("paper/cc6m-mmcl").model
    # (labels_csv defaults to ImageNet's class names and CLIP's 80 templates; check_components read them)
    assert cfg.data.eval == {"name": "labels_csv", "path": "data/ImageNet1K/validation"}
    # The default attack is the paper's trigger: BadNet, banana, random location, 16 px at 224 px.
    from clipbackdoor.poison import ATTACKS

    attack = ATTACKS.build(cfg.attack, "attack")
    assert (attack.target, attack.location, attack.patch_size or default_patch_size(224)) == ("banana", "random", 16)
    assert cfg.init.checkpoint == str(checkpoint) and cfg.defense["name"] == "cleanclip"
