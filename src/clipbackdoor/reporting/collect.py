"""Read run directories, and only run directories, into records the report works on.

A run directory is any folder with a ``config.yaml`` and a ``metrics.jsonl``. What a run *is* comes from its
resolved config, not from its folder name: a run without ``init.checkpoint`` is a pre-training run, labelled
by its objective weights (MMCL, MMCL+SSL, SSL) and poisoned when it drew or reused a poison manifest; a run
with one cleans the run that checkpoint belongs to, is labelled by its defense, and inherits the
pre-training objective and the poisoned/control status of that source. A cleaning run's own poisons (a
poisoned cleaning set, ``poison.budget`` in its config) are counted apart, in ``cleaning_poisons``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipbackdoor.io import atomic_write_text, scan_jsonl

log = logging.getLogger(__name__)

INDEX_NAME = "results.csv"
# The names poison.MANIFEST_NAME and poison.gallery.GALLERY_NAME, without importing torch.
MANIFEST_NAME = "poison_manifest.json"
GALLERY_NAME = "trigger_gallery.png"
METRIC_COLUMNS = (
    "zeroshot_top1",
    "zeroshot_top5",
    "asr_top1",
    "asr_top5",
    "asr_top1_std",
    "clean_target_rate",
    "val_loss",
    "eval_images",
    "eval_classes",
    "asr_images",
)


@dataclass
class RunInfo:
    name: str  # path relative to the runs root
    path: Path
    config: dict[str, Any]
    kind: str  # "pretrain" | "clean"
    objective: str  # this run's own training objective: MMCL, MMCL+SSL, SSL
    method: str | None  # cleaning method (the defense's name); None for pre-training
    seed: int
    evals: list[dict[str, Any]]  # eval records, one per epoch, in epoch order
    complete: bool
    poisoned: bool = False  # pre-training: trained on poisoned pairs; cleaning: its source was
    source: RunInfo | None = None
    source_epoch: int | None = None  # the source's epoch this run started from (None: its last)
    root_objective: str = ""  # objective of the pre-training at the root of the lineage
    lr: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)  # hyper-parameters that tell runs apart
    cleaning_poisons: int = 0  # cleaning runs: how many of their own training pairs were poisoned
    model: str = ""  # the architecture (model.name) of the pre-training at the root of the lineage
    model_parameters: int | None = None  # its parameter count, as its run logged it (None: not logged)
    unreadable_lines: int = 0  # lines of metrics.jsonl that could not be read (skipped, warned about)

    @property
    def start(self) -> dict[str, Any] | None:
        """The evaluation of the model this run started from: the source's evaluation at that epoch."""
        if self.source is None:
            return None
        evals = self.source.evals
        if self.source_epoch is None:
            return evals[-1] if evals else None
        return next((e for e in evals if e.get("epoch") == self.source_epoch), None)


# The paper's names for CleanCLIP's two terms; every other term is named as the config names it.
_TERM_LABELS = {"clip": "MMCL", "inmodal": "SSL"}


def objective_label(objective: dict[str, Any]) -> str:
    """An objective as reports name it, from its config: the terms with a weight > 0, in config order
    (``{"clip_weight": 1, "inmodal_weight": 1}`` -> "MMCL+SSL", ``{"clip_weight": 1, "cyclip_weight": 1}`` ->
    "MMCL+cyclip"), so a new term needs no change here."""
    terms = [key[: -len("_weight")] for key, w in objective.items()
             if key.endswith("_weight") and isinstance(w, (int, float)) and w > 0]
    return "+".join(_TERM_LABELS.get(t, t) for t in terms) or "none"


def find_runs(root: str | Path) -> list[Path]:
    root = Path(root)
    return sorted(p.parent for p in root.rglob("config.yaml") if (p.parent / "metrics.jsonl").is_file())


def collect_runs(root: str | Path, problems: list[str] | None = None) -> list[RunInfo]:
    """Every run under ``root``, with cleaning runs linked to their sources.

    A run whose ``config.yaml`` cannot be read is left out, and a line of a ``metrics.jsonl`` that is not a
    JSON record is skipped; each is logged as a warning and, when ``problems`` is given, appended to it.
    """
    root = Path(root)
    problems = [] if problems is None else problems
    runs: dict[Path, RunInfo] = {}
    for path in find_runs(root):
        try:
            run = _read_run(path, root)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError, TypeError, ValueError) as err:
            detail = " ".join(str(err).split())[:200]
            problems.append(f"skipped {path}: unreadable config.yaml ({detail})")
            log.warning("%s", problems[-1])
            continue
        if run.unreadable_lines:
            problems.append(f"{path / 'metrics.jsonl'}: skipped {run.unreadable_lines} unreadable line(s) (not "
                            "a JSON record, or an evaluation whose metrics are not numbers)")
            log.warning("%s", problems[-1])
        runs[path.resolve()] = run
    for run in runs.values():
        if run.kind == "clean":
            _link_source(run, runs, root)
    for run in runs.values():
        root_run = _root(run)
        run.root_objective = root_run.objective
        # Cleaning keeps the architecture, so the lineage's scale is its pre-training's.
        run.model, run.model_parameters = root_run.model, root_run.model_parameters
        if run.kind == "clean":
            run.poisoned = root_run.poisoned
    _set_params(list(runs.values()))
    return sorted(runs.values(), key=lambda r: r.name)


def _read_run(path: Path, root: Path) -> RunInfo:
    """One run directory; a config that is not the mapping a run writes raises."""
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"expected a mapping, got {type(config).__name__}")
    evals, unreadable, parameters = _evals(path)
    init = (config.get("init") or {}).get("checkpoint")
    defense = config.get("defense") or {}
    poison = config.get("poison") or {}
    objective = objective_label(config.get("objective") or {})
    return RunInfo(
        name=path.relative_to(root).as_posix() if path != root else path.name,
        path=path,
        config=config,
        kind="clean" if init else "pretrain",
        objective=objective,
        # A cleaning run without a defense fine-tunes with the objective its config names.
        method=(defense.get("name") or f"fine-tune {objective}") if init else None,
        seed=int(config.get("seed", 0)),
        evals=evals,
        complete=(path / "summary.json").is_file(),
        poisoned=bool(poison.get("budget") or poison.get("manifest")),
        lr=float((config.get("train") or {}).get("lr", 0.0)),
        cleaning_poisons=_own_poisons(path, poison) if init else 0,
        unreadable_lines=unreadable,
        model=str((config.get("model") or {}).get("name", "")),
        model_parameters=parameters,
    )


def _own_poisons(path: Path, poison: dict[str, Any]) -> int:
    """How many of the run's training pairs were poisoned: the manifest's count (training writes it before
    any metric); without one, a count budget as configured, and at least 1 for a poisoned run."""
    if not (poison.get("budget") or poison.get("manifest")):
        return 0
    try:
        return int(json.loads((path / MANIFEST_NAME).read_text())["num_poisoned"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: no readable %s; its poisons are counted from poison.budget", path, MANIFEST_NAME)
        return max(1, int(float(poison.get("budget") or 0)))


def _evals(path: Path) -> tuple[list[dict[str, Any]], int, int | None]:
    """The run's evaluations, one per epoch, how many lines were not readable records (a torn last line of
    a run still in progress or killed is not counted: the run rewrites it when it resumes), and the model's
    parameter count from its data record (None in runs made before it was logged)."""
    scan = scan_jsonl(path / "metrics.jsonl")
    by_epoch: dict[int, dict[str, Any]] = {}
    unreadable = len(scan.bad_lines)
    parameters = None
    for record in scan.records:
        if record.get("kind") == "data":
            count = record.get("model_parameters")
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                parameters = count
        if record.get("kind") != "eval":
            continue
        epoch = record.get("epoch", 0)
        if not _is_eval_record(record):
            unreadable += 1
            continue
        by_epoch[epoch] = record  # a repeated epoch: the later record wins
    return [by_epoch[e] for e in sorted(by_epoch)], unreadable, parameters


def _is_eval_record(record: dict[str, Any]) -> bool:
    """An evaluation as the training loop writes it: a whole epoch, accuracy and ASR, and every metric
    present a finite number (an edited value would otherwise surface as a crash deep in the analysis)."""
    epoch = record.get("epoch", 0)
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        return False
    if "zeroshot_top1" not in record or "asr_top1" not in record:
        return False
    return all(_is_number(record[k]) for k in METRIC_COLUMNS if k in record)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _link_source(run: RunInfo, runs: dict[Path, RunInfo], root: Path) -> None:
    """Find the run whose checkpoint this run cleaned. The checkpoint path was recorded as given (absolute,
    or relative to where the command ran); a runs folder that moved is matched by its trailing path."""
    ckpt = Path(run.config["init"]["checkpoint"])
    run_dir = ckpt if ckpt.suffix not in (".safetensors", ".pt") else ckpt.parent.parent
    if ckpt.suffix == ".safetensors" and ckpt.stem.startswith("epoch_"):
        run.source_epoch = int(ckpt.stem.split("_", 1)[1])
    candidates = [run_dir, root / run_dir, root.parent / run_dir]
    for cand in candidates:
        with_resolved = runs.get(cand.resolve()) if cand.exists() else None
        if with_resolved is not None:
            run.source = with_resolved
            return
    parts = run_dir.parts
    for other in runs.values():
        rel = Path(other.name).parts
        if len(rel) <= len(parts) and parts[len(parts) - len(rel) :] == rel:
            run.source = other
            return
    log.warning("%s: cannot find the run it cleaned (%s); it is reported without a starting point", run.name, ckpt)


def _root(run: RunInfo) -> RunInfo:
    seen = set()
    while run.source is not None and id(run) not in seen:
        seen.add(id(run))
        run = run.source
    return run


_IGNORED = {"init", "train.threads", "train.progress", "train.device", "data.num_workers", "train.log_every"}


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{full}."))
        else:
            out[full] = value
    return out


def _set_params(runs: list[RunInfo]) -> None:
    """Record, per kind of run, the config keys whose values differ between runs: the sweep's axes."""
    for kind in ("pretrain", "clean"):
        group = [r for r in runs if r.kind == kind]
        flats = [_flat(r.config) for r in group]
        keys = sorted({k for f in flats for k in f})
        varying = [
            k for k in keys if not any(k.startswith(i) for i in _IGNORED) and len({repr(f.get(k)) for f in flats}) > 1
        ]
        for run, flat in zip(group, flats):
            run.params = {k: flat.get(k) for k in varying}


def index_rows(runs: list[RunInfo]) -> list[dict[str, Any]]:
    """One row per evaluation (run, epoch): the results index."""
    rows = []
    for run in runs:
        for record in run.evals:
            row = {
                "run": run.name,
                "kind": run.kind,
                "pretrain_objective": run.root_objective,
                "model": run.model,
                "objective": run.objective,
                "method": run.method or "",
                "poisoned": int(run.poisoned),
                "cleaning_poisons": run.cleaning_poisons,
                "seed": run.seed,
                "lr": run.lr,
                "source": run.source.name if run.source else "",
                "complete": int(run.complete),
                "epoch": record.get("epoch"),
                "step": record.get("step"),
            }
            row.update({k: record.get(k, "") for k in METRIC_COLUMNS})
            row["params"] = ";".join(f"{k}={v}" for k, v in run.params.items())
            rows.append(row)
    return rows


def write_index(root: str | Path, runs: list[RunInfo] | None = None) -> Path:
    """Rebuild ``<root>/results.csv`` from the run directories under ``root``."""
    root = Path(root)
    rows = index_rows(collect_runs(root) if runs is None else runs)
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["run", "epoch", *METRIC_COLUMNS]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = root / INDEX_NAME
    atomic_write_text(path, buffer.getvalue())
    return path
