"""Checkpoints: atomic writes, safe reads, and loading weights into a model."""

from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch

import clipbackdoor.train.checkpoint as ckpt
from clipbackdoor.io import atomic_write
from clipbackdoor.models import weights as model_weights
from clipbackdoor.models.weights import load_weights_into, read_weights, save_weights
from clipbackdoor.registry import ConfigError
from clipbackdoor.rundir import CHECKPOINT_DIR, LAST, epoch_weights_name


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.norm = torch.nn.LayerNorm(2)
        self.register_buffer("steps", torch.tensor(7))


def training_state(net):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.lin.weight.sum().backward()
    opt.step()
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "position": {"epoch": 2, "batch": 5, "step": 41},
        "torch_rng": torch.get_rng_state(),
    }


def assert_nested_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            assert_nested_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_nested_equal(x, y)
    else:
        assert a == b


def test_state_round_trip(tmp_path):
    # What the training loop saves for resume: model, AdamW moments, position, RNG state.
    state = training_state(Net())
    path = tmp_path / "checkpoints" / "last.pt"  # parent folder does not exist yet
    ckpt.save_state(path, state)
    loaded = ckpt.load_state(path)
    assert_nested_equal(state, loaded)
    # the restored optimizer state is usable
    net2 = Net()
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizer"])
    torch.set_rng_state(loaded["torch_rng"])


def test_no_temporary_files_left(tmp_path):
    ckpt.save_state(tmp_path / "last.pt", {"a": torch.ones(2)})
    ckpt.save_state(tmp_path / "last.pt", {"a": torch.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert torch.equal(ckpt.load_state(tmp_path / "last.pt")["a"], torch.zeros(2))


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    # A crash while writing last.pt must leave the previous, complete checkpoint in place (and no
    # half-written temp file), otherwise a killed run cannot resume.
    path = tmp_path / "last.pt"
    ckpt.save_state(path, {"epoch": 1, "w": torch.arange(4)})
    before = path.read_bytes()

    def crashing_atomic_write(p, write):
        def partial_then_fail(f):
            write(f)  # the whole new payload reaches the temp file...
            f.write(b"garbage")
            raise OSError("disk full")  # ...then the writer dies before the rename

        atomic_write(p, partial_then_fail)

    monkeypatch.setattr(ckpt, "atomic_write", crashing_atomic_write)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_state(path, {"epoch": 2, "w": torch.zeros(4)})
    assert path.read_bytes() == before
    assert ckpt.load_state(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_failed_weights_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "epoch_1.safetensors"
    net = Net()
    save_weights(path, net)
    before = path.read_bytes()

    def crashing_atomic_write(p, write):
        def fail(f):
            f.write(b"\x00" * 10)
            raise KeyboardInterrupt

        atomic_write(p, fail)

    monkeypatch.setattr(model_weights, "atomic_write", crashing_atomic_write)
    with pytest.raises(KeyboardInterrupt):
        save_weights(path, Net())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_load_state_refuses_arbitrary_objects(tmp_path):
    # torch.load without weights_only would unpickle (and could execute) anything in the file. The class
    # must be importable, so that only the weights_only rule (not a failed import) can reject it.
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(ConfigError, match="evil.pt"):
        ckpt.load_state(path)


class CallsOnLoad:
    def __reduce__(self):
        # a harmless stand-in for os.system: any importable callable runs when unpickled
        return (os.getcwd, ())


def test_load_state_refuses_reduce_payload(tmp_path):
    path = tmp_path / "exploit.pt"
    torch.save({"model": {}, "x": CallsOnLoad()}, path)
    with pytest.raises(ConfigError):
        ckpt.load_state(path)


def test_load_state_refuses_raw_pickle(tmp_path):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"x": CallsOnLoad()}, protocol=2))
    with pytest.raises(ConfigError):
        ckpt.load_state(path)


def test_load_state_missing_and_corrupt(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ckpt.load_state(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pt"):
        ckpt.load_state(bad)


def test_weights_round_trip(tmp_path):
    net = Net()
    path = tmp_path / epoch_weights_name(3)
    assert path.name == "epoch_3.safetensors"
    save_weights(path, net)
    weights = read_weights(path)
    assert_nested_equal(dict(net.state_dict()), weights)  # buffers included
    other = Net()
    load_weights_into(other, weights, str(path))
    assert_nested_equal(dict(net.state_dict()), dict(other.state_dict()))


def test_read_weights_from_state_file_and_run_dir(tmp_path):
    net = Net()
    state = training_state(net)
    last = tmp_path / "run" / CHECKPOINT_DIR / LAST
    ckpt.save_state(last, state)
    assert_nested_equal(state["model"], read_weights(last))
    # a run directory means its latest training state
    assert_nested_equal(state["model"], read_weights(tmp_path / "run"))


def test_read_weights_errors(tmp_path):
    with pytest.raises(ConfigError, match="last.pt"):
        read_weights(tmp_path)  # a directory without checkpoints/last.pt
    with pytest.raises(ConfigError, match="not found"):
        read_weights(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x01\x02\x03")
    with pytest.raises(ConfigError, match="junk.safetensors"):
        read_weights(junk)


def test_load_weights_strips_ddp_prefix():
    net = Net()
    prefixed = {f"module.{k}": v.clone() + 1 for k, v in net.state_dict().items()}
    target = Net()
    load_weights_into(target, prefixed, "ddp.pt")
    for k, v in target.state_dict().items():
        assert torch.equal(v, prefixed[f"module.{k}"])


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_load_weights_rejects_mismatched_keys(change):
    # Loading a checkpoint of another architecture must fail loudly, not leave layers at random init.
    weights = dict(Net().state_dict())
    if change == "missing":
        weights.pop("norm.weight")
    else:
        weights["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match="norm.weight" if change == "missing" else "extra.weight"):
        load_weights_into(Net(), weights, "other.pt")


def test_load_weights_rejects_wrong_shapes():
    weights = dict(Net().state_dict())
    weights["lin.weight"] = torch.zeros(5, 5)
    with pytest.raises((ConfigError, RuntimeError)):
        load_weights_into(Net(), weights, "other.pt")


def test_resolve_state_path(tmp_path):
    assert ckpt.resolve_state_path(tmp_path) == tmp_path / "checkpoints" / "last.pt"
    assert ckpt.resolve_state_path(tmp_path / "x.pt") == tmp_path / "x.pt"
    with pytest.raises(ConfigError, match="inherit_optimizer"):
        ckpt.resolve_state_path(tmp_path / "epoch_1.safetensors")
