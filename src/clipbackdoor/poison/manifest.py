"""The poison manifest: which pairs were poisoned, with what trigger and caption (``poison_manifest.json``).

It is the whole description of a poisoned dataset, so the triggers are applied on the fly from it (no copy
of the data) and a later run, an export or an audit can reproduce every poisoned pair exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clipbackdoor.io import atomic_write_json
from clipbackdoor.poison.base import ATTACKS, Attack
from clipbackdoor.poison.selection import budget_to_count
from clipbackdoor.registry import ConfigError
from clipbackdoor.rundir import MANIFEST_NAME  # noqa: F401  (where a run keeps its manifest)
from clipbackdoor.seeding import numpy_rng

VERSION = 1


@dataclass
class PoisonManifest:
    attack: dict[str, Any]
    seed: int
    budget: float
    dataset: dict[str, Any]
    num_samples: int
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def indices(self) -> list[int]:
        return [s["index"] for s in self.samples]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "attack": self.attack,
            "seed": self.seed,
            "budget": self.budget,
            "dataset": self.dataset,
            "num_samples": self.num_samples,
            "num_poisoned": len(self.samples),
            "samples": self.samples,
        }

    def write(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> PoisonManifest:
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"poison.manifest: file not found: {path}") from None
        except OSError as err:
            raise ConfigError(f"poison.manifest: cannot read {path}: {err.strerror or err}") from None
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            raise ConfigError(f"poison.manifest: {path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"poison.manifest: {path} is not a manifest (a JSON object)")
        missing = [k for k in ("attack", "seed", "budget", "dataset", "num_samples", "samples") if k not in data]
        if missing:
            raise ConfigError(f"poison.manifest: {path} lacks {', '.join(missing)}")
        _check_structure(data, path)
        return cls(
            attack=data["attack"], seed=data["seed"], budget=data["budget"], dataset=data["dataset"],
            num_samples=data["num_samples"], samples=data["samples"],
        )

    def build_attack(self) -> Attack:
        section = {k: v for k, v in self.attack.items()}
        return ATTACKS.build(section, where="poison manifest attack")


def _check_structure(data: dict[str, Any], path: Path) -> None:
    """Types and ranges of a manifest read from disk, so a damaged or edited file is one error naming the
    field and sample rather than a crash in a loader worker hours later."""
    n = data["num_samples"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"poison.manifest: {path}: num_samples must be a count, got {n!r}")
    if not isinstance(data["attack"], dict) or "name" not in data["attack"]:
        raise ConfigError(f"poison.manifest: {path}: attack must be a mapping with a name")
    if not isinstance(data["samples"], list):
        raise ConfigError(f"poison.manifest: {path}: samples must be a list")
    seen = set()
    for k, sample in enumerate(data["samples"]):
        where = f"poison.manifest: {path}: samples[{k}]"
        if not isinstance(sample, dict):
            raise ConfigError(f"{where} is not a mapping")
        index = sample.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n or index in seen:
            raise ConfigError(f"{where}.index must be a new pair index in 0..{n - 1}, got {index!r}")
        seen.add(index)
        for key, kind in (("id", str), ("caption", str), ("trigger", dict)):
            if not isinstance(sample.get(key), kind):
                raise ConfigError(f"{where}.{key} must be a {kind.__name__}, got {sample.get(key)!r}")


def create_manifest(dataset, attack: Attack, budget: float, seed: int) -> PoisonManifest:
    """Draw the poisoned pairs, their triggers and captions from ``seed``.

    Each sample's trigger and caption come from a generator derived from (seed, index), so they do not
    depend on which other samples were chosen.
    """
    n = len(dataset)
    count = budget_to_count(budget, n)
    captions = [dataset.caption(i) for i in range(n)]
    chosen = attack.select(captions, count, numpy_rng(seed, "poison-select")) if count else []
    samples = []
    for index in chosen:
        index = int(index)
        rng = numpy_rng(seed, "poison-sample", index)
        samples.append(
            {
                "index": index,
                "id": dataset.sample_id(index),
                "trigger": attack.sample_trigger(rng, dataset.image_size),
                "caption": attack.poison_caption(captions[index], rng),
                "original_caption": captions[index],
            }
        )
    return PoisonManifest(
        attack=attack.params(), seed=seed, budget=budget, dataset=dataset.describe(),
        num_samples=n, samples=samples,
    )


class Poisoner:
    """Applies a manifest to batches on the fly: triggers on the chosen images, new captions."""

    def __init__(self, manifest: PoisonManifest, attack: Attack | None = None) -> None:
        self.manifest = manifest
        self.attack = attack or manifest.build_attack()
        self.by_index = {s["index"]: s for s in manifest.samples}

    def check_dataset(self, dataset) -> None:
        if len(dataset) != self.manifest.num_samples:
            raise ConfigError(
                f"poison.manifest: written for a dataset of {self.manifest.num_samples} pairs, "
                f"but the training data has {len(dataset)}"
            )
        for s in self.manifest.samples[:1000]:
            if dataset.sample_id(s["index"]) != s["id"]:
                raise ConfigError(
                    f"poison.manifest: sample {s['index']} is {s['id']!r} in the manifest but "
                    f"{dataset.sample_id(s['index'])!r} in the training data"
                )

    def mark(self, indices: list[int], captions: list[str]) -> tuple[list[str], torch.Tensor, list[dict[str, Any]]]:
        """The poisoned captions, a bool mask (B,) of the poisoned rows and their triggers in row order;
        images are left alone (``apply`` puts the triggers on them, e.g. later on the training device)."""
        flags = torch.tensor([i in self.by_index for i in indices], dtype=torch.bool)
        if not bool(flags.any()):
            return captions, flags, []
        captions = list(captions)
        triggers = []
        for r in flags.nonzero().flatten().tolist():
            entry = self.by_index[indices[r]]
            captions[r] = entry["caption"]
            triggers.append(entry["trigger"])
        return captions, flags, triggers

    def apply(self, images: torch.Tensor, flags: torch.Tensor, triggers: list[dict[str, Any]]) -> torch.Tensor:
        """Images (on any device) with the triggers on the rows ``flags`` marks; the others untouched."""
        if not triggers:
            return images
        rows = flags.nonzero().flatten().to(images.device)
        images = images.clone()
        images[rows] = self.attack.apply(images[rows], triggers)
        return images

    def __call__(
        self, indices: list[int], images: torch.Tensor, captions: list[str]
    ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        captions, flags, triggers = self.mark(indices, captions)
        return self.apply(images, flags, triggers), captions, flags
