"""Reading checkpoints other CLIP code writes (CleanCLIP, OpenAI, open_clip), safely, and the errors."""

from __future__ import annotations

import argparse
import collections
import io
import warnings

import pytest
import torch
from safetensors.torch import save as st_save

import clipbackdoor.models.factory as factory
from clipbackdoor.models import create_model
from clipbackdoor.models.weights import architectures_fitting, load_weights_into, read_weights
from clipbackdoor.registry import ConfigError


def trained_optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.logit_scale.backward()
    opt.step()
    return opt


def cleanclip_checkpoint(model):
    """What the original CleanCLIP code saves each epoch: its DDP model's state dict and the optimizer."""
    state_dict = {f"module.{k}": v for k, v in model.state_dict().items()}
    return {"epoch": 3, "name": "run", "state_dict": state_dict, "optimizer": trained_optimizer(model).state_dict()}


def assert_same_weights(model, reference):
    got, want = model.state_dict(), reference.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k


def test_cleanclip_checkpoint_loads_bit_identically(tmp_path):
    source = create_model("tiny-clip").model
    path = tmp_path / "logs" / "run" / "checkpoints" / "epoch.last.pt"
    path.parent.mkdir(parents=True)
    torch.save(cleanclip_checkpoint(source), path)
    weights = read_weights(path)
    assert not any(k.startswith("module.") for k in weights)
    target = create_model("tiny-clip").model
    load_weights_into(target, weights, str(path))
    assert_same_weights(target, source)
    # ... and as the starting point of a model, through model.pretrained
    assert_same_weights(create_model("tiny-clip", pretrained=str(path)).model, source)


def test_openai_layout_loads_into_open_clip_rn50():
    # OpenAI's (and CleanCLIP's) RN50 keys are open_clip's: take open_clip's RN50 state dict, make it look like
    # one saved from OpenAI's TorchScript model under DDP (hyper-parameter entries, fp16 weights, prefixes).
    model = create_model("RN50-quickgelu").model  # built once (a few seconds), then reloaded
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    openai = {k: v.half() if v.dim() >= 2 else v for k, v in reference.items()}
    assert {"visual.attnpool.c_proj.weight", "visual.layer4.2.bn3.weight", "token_embedding.weight",
            "transformer.resblocks.11.attn.in_proj_weight", "positional_embedding", "text_projection",
            "logit_scale", "ln_final.weight"} <= set(openai)
    openai.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                  vocab_size=torch.tensor(49408))
    saved = {f"module.{k}": v for k, v in openai.items()}
    with torch.no_grad():
        for v in model.state_dict().values():
            v.zero_()
    load_weights_into(model, saved, "rn50.pt")
    for k, v in model.state_dict().items():
        assert v.dtype == reference[k].dtype and torch.equal(v, openai[k].to(v.dtype)), k

    # The same weights in a model of another architecture: the error names the architecture they fit.
    with pytest.raises(ConfigError) as err:
        load_weights_into(create_model("tiny-clip").model, saved, "rn50.pt")
    message = str(err.value)
    assert "rn50.pt does not fit the model" in message and "model.name=RN50 or RN50-quickgelu" in message
    assert "-quickgelu one" in message and "\n" not in message


def test_architectures_fitting_tells_tiny_models_apart():
    assert architectures_fitting(create_model("tiny-vit").model.state_dict()) == ["tiny-vit"]
    assert architectures_fitting({"lin.weight": torch.zeros(2, 2)}) == []


def test_wrapped_and_flat_layouts_give_the_same_weights(tmp_path):
    model = create_model("tiny-clip").model
    flat = model.state_dict()
    layouts = {
        "ours_last.pt": {"model": flat, "optimizer": {}, "position": {"epoch": 1}},
        "open_clip_pytorch_model.bin": flat,
        "compiled_ddp.pt": {"state_dict": {f"module._orig_mod.{k}": v for k, v in flat.items()}},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
    # Hugging Face sometimes names safetensors files .bin: recognised by content, not by name
    (tmp_path / "safetensors.bin").write_bytes(st_save({k: v.contiguous() for k, v in flat.items()}))
    for name in [*layouts, "safetensors.bin"]:
        weights = read_weights(tmp_path / name)
        assert set(weights) == set(flat) and all(torch.equal(weights[k], flat[k]) for k in flat), name


def test_scalar_shapes_and_missing_batchnorm_counters_are_tolerated():
    source = create_model("tiny-clip").model
    weights = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    weights["logit_scale"] = weights["logit_scale"].reshape(1)
    target = create_model("tiny-clip").model
    load_weights_into(target, weights, "x.pt")
    assert torch.equal(target.logit_scale, source.logit_scale)


class Options(collections.OrderedDict):
    """Stands in for any class of the training code that pickled itself into a checkpoint."""


@pytest.mark.parametrize("extra", [argparse.Namespace(lr=5e-4, name="run"), Options(a=1)],
                         ids=["namespace", "custom_class"])
def test_pickled_objects_are_refused_not_unpickled(tmp_path, extra):
    path = tmp_path / "epoch_2.pt"
    torch.save({"epoch": 2, "state_dict": create_model("tiny-clip").model.state_dict(), "options": extra}, path)
    with pytest.raises(ConfigError) as err:
        read_weights(path)
    message = str(err.value)
    assert message.startswith(f"refused to unpickle {path}") and type(extra).__name__ in message
    assert "\n" not in message


def test_corrupt_truncated_and_torchscript_files_are_clear_errors(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    buf = io.BytesIO()
    torch.save({"w": torch.ones(100)}, buf)
    (tmp_path / "truncated.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for name in ("garbage.pt", "truncated.pt"):
        with pytest.raises(ConfigError, match=f"cannot read checkpoint .*{name}: not a PyTorch") as err:
            read_weights(tmp_path / name)
        assert "\n" not in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "jit.pt"))
        with pytest.raises(ConfigError, match="jit.pt: it is a TorchScript archive"):
            read_weights(tmp_path / "jit.pt")


@pytest.mark.parametrize("obj, match", [
    ({"epoch": 3, "name": "run"}, "holds no model weights"),
    ({}, "holds no model weights"),
    ({"state_dict": {"w": torch.zeros(1), "step": 3}}, "entry 'step' is a int"),
    (torch.zeros(3), "holds no model weights"),
])
def test_files_without_a_state_dict_say_so(tmp_path, obj, match):
    torch.save(obj, tmp_path / "x.pt")
    with pytest.raises(ConfigError, match=match):
        read_weights(tmp_path / "x.pt")


def test_pretrained_is_a_local_file_or_a_cached_tag(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="'openai' is neither a local file nor an open_clip tag of tiny-clip"):
        create_model("tiny-clip", pretrained="openai")
    # An open_clip tag is resolved in the local caches only; nothing is downloaded.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, filename: None)
    with pytest.raises(ConfigError, match=r"'openai' weights are not in the local cache.*resnet50_clip"):
        factory._pretrained_file("RN50-quickgelu", "openai")
    with pytest.raises(ConfigError, match="open_clip tags of RN50-quickgelu: openai"):
        factory._pretrained_file("RN50-quickgelu", "no-such-tag")
    cached = tmp_path / "open_clip_model.safetensors"
    cached.write_bytes(b"")
    seen = []

    def cache(repo, filename):
        seen.append((repo, filename))
        return str(cached) if filename == "open_clip_model.safetensors" else None

    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", cache)
    assert factory._pretrained_file("RN50-quickgelu", "openai") == cached
    assert seen == [("timm/resnet50_clip.openai", "open_clip_model.safetensors")]


class _Payload:
    """A pickle that runs a function when it is loaded: what a malicious checkpoint carries."""

    def __reduce__(self):
        import os

        return (os.getpid, ())


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_a_payload_is_refused_in_one_line_that_says_why_and_what_to_use(tmp_path, zipfile):
    path = tmp_path / "epoch_3.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _Payload()}, path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(ConfigError) as err:
        read_weights(path)
    message = str(err.value)
    assert message == (
        f"refused to unpickle {path}: it holds code or Python objects that are not allowed (posix.getpid), and "
        "unpickling them could run arbitrary code; use a safetensors file or a plain state dict of tensors "
        "(torch.save(model.state_dict(), ...))"
    )


def test_a_plain_pickle_that_torch_did_not_write_is_a_one_line_error(tmp_path):
    import pickle

    path = tmp_path / "weights.pt"
    path.write_bytes(pickle.dumps({"x": _Payload()}, protocol=5))
    with pytest.raises(ConfigError) as err:
        read_weights(path)
    message = str(err.value)
    assert message.startswith(f"cannot read checkpoint {path}: not a PyTorch or safetensors file, or pickled data "
                              "the safe loader does not allow (Unsupported operand")
    assert message.endswith("use a safetensors file or a plain state dict of tensors") and "\n" not in message
