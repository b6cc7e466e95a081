"""Hand-made run directories, as the training loop writes them, for tests of what reads them."""

import json

import yaml


def make_run(root, name, *, evals, objective=(1.0, 0.0), poison=0.0, source=None, defense=None, lr=1e-3, seed=0,
             model=None, parameters=None):
    """A run directory as the training loop writes it: config.yaml, metrics.jsonl, summary.json.
    ``evals`` is a list of (acc, asr, val_loss) per epoch starting at epoch 0; ``model`` names the architecture
    and ``parameters`` is the count its data record logs."""
    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "objective": {"clip_weight": objective[0], "inmodal_weight": objective[1]},
              "poison": {"budget": poison, "manifest": None}, "defense": {"name": defense} if defense else None,
              "init": {"checkpoint": str(root / source) if source else None}, "train": {"lr": lr, "epochs": 2}}
    if model is not None:
        config["model"] = {"name": model}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [json.dumps({"kind": "eval", "epoch": e, "step": e * 10, "zeroshot_top1": acc, "asr_top1": asr,
                         "clean_target_rate": 0.02, **({"val_loss": vl} if vl is not None else {})})
             for e, (acc, asr, vl) in enumerate(evals)]
    if parameters is not None:
        lines.insert(0, json.dumps({"kind": "data", "epoch": 0, "step": 0, "rows": 100, "model": model,
                                    "model_parameters": parameters}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "complete"}))
    return run
