"""Shared pytest setup."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    # Tests draw random embeddings and initialise models from the global generators; a fixed seed per test
    # makes a failure reproducible and independent of which tests ran before it.
    random.seed(42)
    np.random.seed(42)
    torch.manual_seed(42)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests: a second intra-op thread only adds
    synchronisation, which costs seconds per forward pass when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
