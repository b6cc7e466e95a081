"""A checkpoint written by the original CleanCLIP code: evaluated, cleaned and converted from the command line."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml

from clipbackdoor.cli import main
from clipbackdoor.io import read_jsonl
from clipbackdoor.models import create_model
from clipbackdoor.models.weights import read_weights, save_weights

# The model and evaluation set a foreign checkpoint needs described (it has no run directory).
DESCRIBE = {"model": {"name": "tiny-clip"},
            "data": {"eval": {"name": "synthetic", "split": "test", "num_samples": 100}},
            "eval": {"batch_size": 100}}


@pytest.fixture
def cleanclip_run(tmp_path):
    """(the original model, its CleanCLIP checkpoint at logs/<name>/checkpoints/epoch.last.pt, a config)."""
    model = create_model("tiny-clip").model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.logit_scale.backward()
    opt.step()
    path = tmp_path / "logs" / "run" / "checkpoints" / "epoch.last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 3, "name": "run", "optimizer": opt.state_dict(),
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    config = tmp_path / "describe.yaml"
    config.write_text(yaml.safe_dump(DESCRIBE))
    return model, path, config


def final_metrics(run_dir):
    return json.loads((run_dir / "summary.json").read_text())["final"]


def test_cleanclip_checkpoint_evaluates_and_cleans(tmp_path, cleanclip_run):
    model, path, config = cleanclip_run
    original = tmp_path / "original.safetensors"
    save_weights(original, model)
    for name, source in (("cleanclip", path), ("original", original)):
        assert main(["evaluate", "--checkpoint", str(source), "--config", str(config),
                     "--out", str(tmp_path / f"eval-{name}")]) == 0
    metrics = final_metrics(tmp_path / "eval-cleanclip")
    assert metrics == final_metrics(tmp_path / "eval-original") and metrics["eval_images"] == 100

    # Cleaning starts from the CleanCLIP weights: its epoch-0 evaluation is the evaluation above.
    out = tmp_path / "clean"
    assert main(["clean", "--from", str(path), "--defense", "cleanclip", "--out", str(out), "train.epochs=1",
                 "data.train.num_samples=64", "train.batch_size=32", "data.eval.num_samples=100",
                 "eval.batch_size=100", "train.progress=false"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["init"]["checkpoint"] == str(path) and cfg["defense"]["name"] == "cleanclip"
    start = next(r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "eval" and r["epoch"] == 0)
    assert {k: start[k] for k in metrics} == metrics
    assert final_metrics(out) is not None and (out / "checkpoints" / "epoch_1.safetensors").is_file()


def test_convert_round_trip(tmp_path, cleanclip_run, capsys):
    model, path, _ = cleanclip_run
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(path), str(out), "--model", "tiny-clip"]) == 0
    assert "tiny-clip weights" in capsys.readouterr().out
    weights = read_weights(out)
    assert set(weights) == set(model.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_wrong_architecture_and_unsafe_files_are_one_line_errors(tmp_path, cleanclip_run, capsys):
    _, path, config = cleanclip_run
    assert main(["convert", str(path), str(tmp_path / "x.safetensors"), "--model", "tiny-vit"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "model.name=tiny-clip" in err and "Traceback" not in err
    assert main(["convert", str(path), str(tmp_path / "x.pt"), "--model", "tiny-clip"]) == 2
    assert "must be a .safetensors file" in capsys.readouterr().err

    # CleanCLIP-style code may pickle its argparse options into the checkpoint: refused, never unpickled.
    unsafe = tmp_path / "unsafe.pt"
    torch.save({**torch.load(path, weights_only=True), "options": argparse.Namespace(lr=5e-4)}, unsafe)
    assert main(["evaluate", "--checkpoint", str(unsafe), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"refused to unpickle {unsafe}" in err and "argparse.Namespace" in err
    assert len(err.strip().splitlines()) == 1
