"""Derived seeds: every random choice is a pure function of (experiment seed, purpose, indices).

Deriving instead of consuming one global stream is what makes runs resumable mid-epoch and poison
manifests reproducible: the noise of sample 17's trigger does not depend on how many random numbers
something else drew before it.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, stable across processes and Python versions."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def torch_generator(*parts: object) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def numpy_rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


def python_rng(*parts: object) -> random.Random:
    return random.Random(derive_seed(*parts))


def seed_everything(seed: int) -> None:
    """Seed the global generators too, for third-party code (model init) that draws from them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
