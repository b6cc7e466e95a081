"""Interrupting a training run mid-way, as Ctrl-C or a lost node would, to test that it resumes exactly."""

import pytest

from clipbackdoor.train import loop


def train_until_interrupted(monkeypatch, cfg, run_dir, step: int) -> None:
    """Run ``cfg`` into ``run_dir`` until a KeyboardInterrupt in optimizer step ``step`` (counted from 1 in
    this process); the run keeps what it checkpointed before that step."""
    calls = {"n": 0}
    real = loop.forward_batch

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "forward_batch", flaky)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_training(cfg, run_dir)
    finally:
        monkeypatch.setattr(loop, "forward_batch", real)
