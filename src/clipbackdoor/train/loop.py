"""The one training loop, for pre-training and for cleaning.

Pre-training and every fine-tuning defense differ only in configuration: the data, the objective weights,
the starting checkpoint and the hyper-parameters. ``run_training`` writes the run directory
(``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``poison_manifest.json``), evaluates before the first
step and after every epoch, and resumes from ``checkpoints/last.pt`` when it finds one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from clipbackdoor.config import ExperimentConfig
from clipbackdoor.data.pipeline import EpochBatchSampler, PairBatches, make_loader
from clipbackdoor.data.transforms import Normalize
from clipbackdoor.eval.runner import Evaluator
from clipbackdoor.io import JsonlLogger, atomic_write_json, read_jsonl, write_jsonl
from clipbackdoor.objectives import ModelOutputs, build_objective
from clipbackdoor.seeding import derive_seed, seed_everything, torch_generator
from clipbackdoor.train import checkpoint as ckpt
from clipbackdoor.train.optim import build_optimizer
from clipbackdoor.train.run import RunDir, build_components, resolve_device
from clipbackdoor.train.schedule import lr_at

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class Position:
    """Where training stands: completed epochs, batches done in the current epoch, optimizer steps."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def forward_batch(model, batch, objective, normalize, image_augment, generator, device) -> dict[str, torch.Tensor]:
    """One forward pass over [originals; views] (as CleanCLIP does: a single pass of 2B images and texts)."""
    images = batch["image"].to(device, non_blocking=True)
    texts = batch["text"].to(device, non_blocking=True)
    n = len(images)
    if objective.needs_views:
        images = torch.cat([images, image_augment(images, generator)])
        texts = torch.cat([texts, batch["text_aug"].to(device, non_blocking=True)])
    image_features, text_features, scale = model(normalize(images), texts)[:3]
    out = ModelOutputs(image=image_features[:n], text=text_features[:n], logit_scale=scale)
    if objective.needs_views:
        out.image_aug, out.text_aug = image_features[n:], text_features[n:]
    return objective(out)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records written after the checkpoint we resume from, so nothing is counted twice."""
    records = read_jsonl(path)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) != len(records):
        write_jsonl(path, kept)


def run_training(cfg: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train (or clean) according to ``cfg`` in ``out_dir``; returns the run's summary.

    A finished run is not trained again: its summary is returned as is.
    """
    run = RunDir(out_dir)
    run.write_config(cfg)
    if run.is_complete():
        log.info("%s is complete; nothing to do", run.path)
        return run.summary()
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    seed_everything(derive_seed(cfg.seed, "init"))
    c = build_components(cfg, run, device)
    model, objective = c.model, build_objective(cfg.objective)
    normalize = Normalize().to(device)
    batches = PairBatches(
        c.pairs, c.tokenizer, seed=cfg.seed, poisoner=c.poisoner,
        text_augment=c.text_augment if objective.needs_views else None,
        text_augment_per=cfg.data.text_augment_per,
    )
    sampler = EpochBatchSampler(len(c.pairs), t.batch_size, seed=derive_seed(cfg.seed, "data"))
    loader = make_loader(batches, sampler, cfg.data.num_workers)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * t.epochs
    optimizer = build_optimizer(model, t.lr, t.weight_decay, (t.beta1, t.beta2), t.eps)
    pos = Position()

    last = run.checkpoints / ckpt.LAST
    if last.is_file():
        state = ckpt.load_state(last)
        ckpt.load_weights_into(model, state["model"], str(last))
        optimizer.load_state_dict(state["optimizer"])
        pos = Position(**state["position"])
        torch.set_rng_state(state["torch_rng"])
        _truncate_metrics(run.metrics, pos.step)
        log.info("resuming %s at epoch %d, batch %d", run.path, pos.epoch, pos.batch)
    elif cfg.init.checkpoint:
        ckpt.load_weights_into(model, ckpt.read_weights(cfg.init.checkpoint), cfg.init.checkpoint)
        if cfg.init.inherit_optimizer:
            state = ckpt.load_state(ckpt.resolve_state_path(cfg.init.checkpoint))
            optimizer.load_state_dict(state["optimizer"])
        run.metrics.unlink(missing_ok=True)
    else:
        run.metrics.unlink(missing_ok=True)

    evaluator = Evaluator(
        c.eval_set, c.tokenizer, c.attack, seed=cfg.eval.asr_seed, draws=cfg.eval.asr_draws,
        batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, device=device,
    )
    offset = steps_per_epoch if t.legacy_step_offset else 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")

    def evaluate(logger: JsonlLogger) -> dict[str, Any]:
        start = time.perf_counter()
        metrics = evaluator(model)
        record = {"kind": "eval", "epoch": pos.epoch, "step": pos.step, **metrics,
                  "eval_seconds": round(time.perf_counter() - start, 3)}
        logger.log(record)
        log.info("epoch %d: %s", pos.epoch, _fmt(metrics))
        return record

    def save(final_of_epoch: bool) -> None:
        if final_of_epoch and t.keep_epoch_checkpoints:
            ckpt.save_weights(run.checkpoints / ckpt.epoch_weights_name(pos.epoch), model)
        ckpt.save_state(last, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "position": vars(pos).copy(), "torch_rng": torch.get_rng_state(),
        })

    # A run resumed at an epoch boundary already logged that epoch's evaluation; it must not log it twice.
    done = [r for r in read_jsonl(run.metrics) if r["kind"] == "eval" and r["epoch"] == pos.epoch]
    last_eval: dict[str, Any] | None = done[-1] if done and pos.batch == 0 else None
    with JsonlLogger(run.metrics) as logger:
        if pos.epoch == 0 and pos.batch == 0:
            last_eval = evaluate(logger)
            save(final_of_epoch=True)
        model.train()
        while pos.epoch < t.epochs:
            sampler.set_epoch(pos.epoch, start_batch=pos.batch)
            batches.set_epoch(pos.epoch)
            bar = tqdm(loader, total=steps_per_epoch, initial=pos.batch, disable=not t.progress,
                       desc=f"epoch {pos.epoch + 1}/{t.epochs}", leave=False, dynamic_ncols=True)
            tick = time.perf_counter()
            for batch in bar:
                lr = lr_at(pos.step, base_lr=t.lr, warmup_steps=t.warmup_steps, total_steps=total_steps,
                           schedule=t.schedule, step_offset=offset)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                gen = torch_generator(cfg.seed, "image-views", pos.epoch, pos.batch)
                with autocast:
                    losses = forward_batch(model, batch, objective, normalize, c.image_augment, gen, device)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                if t.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                with torch.no_grad():
                    # CLIP clamps the learned temperature so that s = exp(logit_scale) <= 100.
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                pos.batch += 1
                pos.step += 1
                if not torch.isfinite(losses["loss"]):
                    raise FloatingPointError(
                        f"loss is {losses['loss'].item()} at epoch {pos.epoch + 1}, step {pos.step}; "
                        "lower train.lr or set train.grad_clip"
                    )
                if pos.step % t.log_every == 0 or pos.batch == steps_per_epoch:
                    now = time.perf_counter()
                    record = {"kind": "train", "epoch": pos.epoch + 1, "step": pos.step, "lr": lr,
                              "logit_scale": model.logit_scale.detach().exp().item(),
                              "poisoned_in_batch": int(batch["is_poisoned"].sum())}
                    record.update({k: round(v.detach().item(), 6) for k, v in losses.items()})
                    record["samples_per_second"] = round(len(batch["index"]) / max(now - tick, 1e-9), 1)
                    logger.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                tick = time.perf_counter()
                if t.checkpoint_every_steps and pos.step % t.checkpoint_every_steps == 0 \
                        and pos.batch < steps_per_epoch:
                    save(final_of_epoch=False)
            bar.close()
            pos.epoch += 1
            pos.batch = 0
            if cfg.eval.every_epoch or pos.epoch == t.epochs:
                last_eval = evaluate(logger)
            save(final_of_epoch=True)
        if last_eval is None or last_eval["epoch"] != pos.epoch:
            # Resumed after the last epoch's checkpoint, or evaluation only at the end.
            last_eval = evaluate(logger)
    summary = {"status": "complete", "epochs": t.epochs, "steps": pos.step, "final": last_eval,
               "train_pairs": len(c.pairs), "poisoned_pairs": len(c.poisoner.manifest.samples) if c.poisoner else 0}
    atomic_write_json(run.summary_path, summary)
    return summary


def _fmt(metrics: dict[str, Any]) -> str:
    keys = ("zeroshot_top1", "zeroshot_top5", "asr_top1", "clean_target_rate")
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
