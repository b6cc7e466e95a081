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
from clipbackdoor.eval.validation import ValidationLoss
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
    # Sum of this epoch's batch losses so far; checkpointed, so a resumed epoch reports the same mean.
    epoch_loss: float = 0.0


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


class Trainer:
    """Holds a run's components and position; ``fit`` evaluates, trains, checkpoints and resumes."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir) -> None:
        self.cfg, self.run, t = cfg, run, cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        seed_everything(derive_seed(cfg.seed, "init"))
        self.c = build_components(cfg, run, self.device)
        self.model, self.objective = self.c.model, build_objective(cfg.objective)
        self.normalize = Normalize().to(self.device)
        prepare = getattr(self.c.text_augment, "prepare", None)
        if self.objective.needs_views and prepare is not None:
            prepare()
        self.batches = PairBatches(
            self.c.pairs, self.c.tokenizer, seed=cfg.seed, poisoner=self.c.poisoner,
            text_augment=self.c.text_augment if self.objective.needs_views else None,
            text_augment_per=cfg.data.text_augment_per,
        )
        self.sampler = EpochBatchSampler(len(self.c.pairs), t.batch_size, seed=derive_seed(cfg.seed, "data"))
        self.loader = make_loader(self.batches, self.sampler, cfg.data.num_workers)
        self.steps_per_epoch = len(self.sampler)
        self.optimizer = build_optimizer(self.model, t.lr, t.weight_decay, (t.beta1, t.beta2), t.eps)
        self.evaluator = Evaluator(
            self.c.eval_set, self.c.tokenizer, self.c.attack, seed=cfg.eval.asr_seed, draws=cfg.eval.asr_draws,
            batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, device=self.device,
        )
        self.validation = None
        if self.c.validation is not None:
            self.validation = ValidationLoss(self.c.validation, self.c.tokenizer, batch_size=cfg.eval.batch_size,
                                             device=self.device)
        self.pos = Position()
        self.last = run.checkpoints / ckpt.LAST

    # -- state ---------------------------------------------------------------------------------------
    def restore(self) -> None:
        """Resume from ``last.pt``; else start from ``init.checkpoint`` or random weights."""
        init = self.cfg.init
        if self.last.is_file():
            state = ckpt.load_state(self.last)
            ckpt.load_weights_into(self.model, state["model"], str(self.last))
            self.optimizer.load_state_dict(state["optimizer"])
            self.pos = Position(**state["position"])
            torch.set_rng_state(state["torch_rng"])
            _truncate_metrics(self.run.metrics, self.pos.step)
            log.info("resuming %s at epoch %d, batch %d", self.run.path, self.pos.epoch, self.pos.batch)
            return
        if init.checkpoint:
            ckpt.load_weights_into(self.model, ckpt.read_weights(init.checkpoint), init.checkpoint)
            if init.inherit_optimizer:
                state = ckpt.load_state(ckpt.resolve_state_path(init.checkpoint))
                self.optimizer.load_state_dict(state["optimizer"])
        self.run.metrics.unlink(missing_ok=True)

    def save(self, end_of_epoch: bool) -> None:
        if end_of_epoch and self.cfg.train.keep_epoch_checkpoints:
            ckpt.save_weights(self.run.checkpoints / ckpt.epoch_weights_name(self.pos.epoch), self.model)
        ckpt.save_state(self.last, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "position": vars(self.pos).copy(), "torch_rng": torch.get_rng_state(),
        })

    def evaluate(self, logger: JsonlLogger) -> dict[str, Any]:
        start = time.perf_counter()
        metrics = self.evaluator(self.model)
        if self.validation is not None:
            metrics["val_loss"] = round(self.validation(self.model), 6)
        record = {"kind": "eval", "epoch": self.pos.epoch, "step": self.pos.step, **metrics,
                  "eval_seconds": round(time.perf_counter() - start, 3)}
        logger.log(record)
        log.info("epoch %d: %s", self.pos.epoch, _fmt(metrics))
        return record

    # -- training ------------------------------------------------------------------------------------
    def step(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], float]:
        t, pos = self.cfg.train, self.pos
        lr = lr_at(pos.step, base_lr=t.lr, warmup_steps=t.warmup_steps,
                   total_steps=self.steps_per_epoch * t.epochs, schedule=t.schedule,
                   step_offset=self.steps_per_epoch if t.legacy_step_offset else 0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Views are seeded by position, so a resumed run draws exactly the views it would have drawn.
        gen = torch_generator(self.cfg.seed, "image-views", pos.epoch, pos.batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16"):
            losses = forward_batch(self.model, batch, self.objective, self.normalize, self.c.image_augment,
                                   gen, self.device)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(
                f"loss is {losses['loss'].item()} at epoch {pos.epoch + 1}, step {pos.step + 1}; "
                "lower train.lr or set train.grad_clip (the last checkpoint is intact)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            # CLIP clamps the learned temperature so that s = exp(logit_scale) <= 100.
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        pos.batch += 1
        pos.step += 1
        pos.epoch_loss += losses["loss"].detach().item()
        return losses, lr

    def train_epoch(self, logger: JsonlLogger) -> None:
        t, pos = self.cfg.train, self.pos
        self.sampler.set_epoch(pos.epoch, start_batch=pos.batch)
        self.batches.set_epoch(pos.epoch)
        bar = tqdm(self.loader, total=self.steps_per_epoch, initial=pos.batch, disable=not t.progress,
                   desc=f"epoch {pos.epoch + 1}/{t.epochs}", leave=False, dynamic_ncols=True)
        start = tick = time.perf_counter()
        for batch in bar:
            losses, lr = self.step(batch)
            if pos.step % t.log_every == 0 or pos.batch == self.steps_per_epoch:
                record = {"kind": "train", "epoch": pos.epoch + 1, "step": pos.step, "lr": lr,
                          "logit_scale": self.model.logit_scale.detach().exp().item(),
                          "poisoned_in_batch": int(batch["is_poisoned"].sum())}
                record.update({k: round(v.detach().item(), 6) for k, v in losses.items()})
                seconds = max(time.perf_counter() - tick, 1e-9)
                record["samples_per_second"] = round(len(batch["index"]) / seconds, 1)
                logger.log(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
            tick = time.perf_counter()
            every = t.checkpoint_every_steps
            if every and pos.step % every == 0 and pos.batch < self.steps_per_epoch:
                self.save(end_of_epoch=False)
        bar.close()
        pos.epoch += 1
        logger.log({"kind": "epoch", "epoch": pos.epoch, "step": pos.step,
                    "train_loss": round(pos.epoch_loss / self.steps_per_epoch, 6),
                    "epoch_seconds": round(time.perf_counter() - start, 2)})
        pos.batch = 0
        pos.epoch_loss = 0.0

    def fit(self) -> dict[str, Any]:
        self.restore()
        t, pos = self.cfg.train, self.pos
        # A run resumed at an epoch boundary already logged that epoch's evaluation; never log it twice.
        done = [r for r in read_jsonl(self.run.metrics) if r["kind"] == "eval" and r["epoch"] == pos.epoch]
        last_eval = done[-1] if done and pos.batch == 0 else None
        with JsonlLogger(self.run.metrics) as logger:
            # A run killed after its epoch-0 checkpoint resumes at (0, 0) with that evaluation logged.
            if pos.epoch == 0 and pos.batch == 0 and last_eval is None:
                last_eval = self.evaluate(logger)
                self.save(end_of_epoch=True)
            self.model.train()
            while pos.epoch < t.epochs:
                self.train_epoch(logger)
                if self.cfg.eval.every_epoch or pos.epoch == t.epochs:
                    last_eval = self.evaluate(logger)
                self.save(end_of_epoch=True)
            if last_eval is None or last_eval["epoch"] != pos.epoch:
                last_eval = self.evaluate(logger)
        if not t.keep_last_state:
            # The final weights must exist before last.pt may go (after the summary; see run_training).
            final = self.run.checkpoints / ckpt.epoch_weights_name(pos.epoch)
            if not final.is_file():
                ckpt.save_weights(final, self.model)
        poisoner = self.c.poisoner
        return {"status": "complete", "epochs": t.epochs, "steps": pos.step, "final": last_eval,
                "train_pairs": len(self.c.pairs), "poisoned_pairs": len(poisoner.manifest.samples) if poisoner else 0}


def run_training(cfg: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train (or clean) according to ``cfg`` in ``out_dir``; returns the run's summary.

    A finished run is not trained again: its summary is returned as is.
    """
    run = RunDir(out_dir)
    run.write_config(cfg)
    if run.is_complete():
        log.info("%s is complete; nothing to do", run.path)
        return run.summary()
    summary = Trainer(cfg, run).fit()
    atomic_write_json(run.summary_path, summary)
    if not cfg.train.keep_last_state:
        # Only now: a run killed before its summary is written still resumes from last.pt.
        (run.checkpoints / ckpt.LAST).unlink(missing_ok=True)
    return summary


def _fmt(metrics: dict[str, Any]) -> str:
    keys = ("zeroshot_top1", "zeroshot_top5", "asr_top1", "clean_target_rate", "val_loss")
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
