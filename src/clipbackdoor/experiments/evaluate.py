"""Evaluate a saved checkpoint with a config's model, evaluation set and attack."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from clipbackdoor.config import ExperimentConfig
from clipbackdoor.distributed import resolve_device
from clipbackdoor.eval.runner import Evaluator
from clipbackdoor.io import JsonlLogger, atomic_write_json
from clipbackdoor.models.weights import load_weights_into, read_weights
from clipbackdoor.rundir import RunDir
from clipbackdoor.train.run import build_eval_parts


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Load ``checkpoint`` into the config's model and measure accuracy and ASR; with ``out_dir``, write
    a run directory holding the config, one ``eval`` record in ``metrics.jsonl`` and ``summary.json``."""
    device = resolve_device(cfg.train.device)
    model, tokenizer, eval_set, attack, _ = build_eval_parts(cfg, device)
    load_weights_into(model, read_weights(checkpoint), str(checkpoint))
    evaluator = Evaluator(
        eval_set, tokenizer, attack, seed=cfg.eval.asr_seed, draws=cfg.eval.asr_draws,
        batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, device=device,
    )
    start = time.perf_counter()
    metrics = evaluator(model)
    seconds = round(time.perf_counter() - start, 3)
    if out_dir is not None:
        run = RunDir(out_dir)
        cfg.init.checkpoint = str(checkpoint)
        run.write_config(cfg)
        run.metrics.unlink(missing_ok=True)
        with JsonlLogger(run.metrics) as logger:
            logger.log({"kind": "eval", "epoch": 0, "step": 0, **metrics, "eval_seconds": seconds,
                        "device": str(device)})
        atomic_write_json(run.summary_path, {"status": "complete", "final": metrics, "checkpoint": str(checkpoint)})
    return metrics
