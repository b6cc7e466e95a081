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

from clipbackdoor import distributed
from clipbackdoor.config import ExperimentConfig
from clipbackdoor.data.loading import build_pass_loader, build_train_loader
from clipbackdoor.data.transforms import Normalize
from clipbackdoor.defenses import DEFENSES, StartContext
from clipbackdoor.distributed import SINGLE, DistContext
from clipbackdoor.eval.runner import Evaluator
from clipbackdoor.io import atomic_write_json, drop_torn_tail, read_jsonl, write_jsonl
from clipbackdoor.models import create_model
from clipbackdoor.models.weights import load_weights_into, read_weights, save_weights
from clipbackdoor.objectives import VIEWS, EpochContext, build_objective
from clipbackdoor.registry import ConfigError
from clipbackdoor.rundir import LAST, RunDir, epoch_weights_name
from clipbackdoor.seeding import derive_seed, seed_everything, torch_generator
from clipbackdoor.train import checkpoint as ckpt
from clipbackdoor.train.forward import embed_images, forward_batch
from clipbackdoor.train.loggers import MetricsLogger, RecordLogger, check_installed, open_loggers
from clipbackdoor.train.optim import build_optimizer
from clipbackdoor.train.progress import RunProgress
from clipbackdoor.train.run import build_components, check_components
from clipbackdoor.train.schedule import lr_at
from clipbackdoor.train.validation import ValidationLoss

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
    # Rows of this epoch dropped because their image could not be read (data on_error: skip).
    dropped: int = 0


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop a torn last line (saying so in the log) and the records written after the checkpoint we resume
    from, so nothing is counted twice; a damaged line elsewhere stops the run, naming it."""
    drop_torn_tail(path)
    records = read_jsonl(path)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) != len(records):
        write_jsonl(path, kept)


class _NoLog:
    """The logger of ranks other than 0: every record is rank 0's to write."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def __enter__(self) -> _NoLog:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Trainer:
    """Holds a run's components and position; ``fit`` evaluates, trains, checkpoints and resumes.

    ``ctx`` places this process in a torchrun job; every rank builds the same components, trains its
    slice of each global batch and evaluates its shard of the evaluation images, and rank 0 alone writes
    the run directory.
    """

    def __init__(self, cfg: ExperimentConfig, run: RunDir, ctx: DistContext = SINGLE) -> None:
        self.cfg, self.run, self.ctx, t = cfg, run, ctx, cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = distributed.device_for(ctx, t.device)
        distributed.init(ctx, self.device)
        if ctx.is_main:
            # train.device may say "auto": the run's log and its data record say what it resolved to.
            log.info("%s on %s (%d process%s)", run.path, self.device, ctx.world_size, "es" if ctx.world_size > 1 else "")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = t.tf32
            torch.backends.cudnn.allow_tf32 = t.tf32
            torch.backends.cudnn.benchmark = True
        seed_everything(derive_seed(cfg.seed, "init"))
        # Every rank draws the same manifest from the seed; rank 0 writes it.
        self.c = build_components(cfg, run if ctx.is_main else None, self.device)
        self.model = self.c.model
        self.objective = build_objective(cfg.objective, ctx.rank, ctx.world_size,
                                         embed_dim=getattr(self.model.visual, "output_dim", None)).to(self.device)
        self.defense = DEFENSES.build(cfg.defense, where="defense") if cfg.defense else None
        self.forward_model = self._wrap(self.model)
        self.normalize = Normalize().to(self.device)
        views = VIEWS in self.objective.needs
        prepare = getattr(self.c.text_augment, "prepare", None)
        if views and prepare is not None:
            prepare()
        self.loader = self._loader(text_augment=self.c.text_augment if views else None)
        self.steps_per_epoch = len(self.loader)
        self.progress = RunProgress(self.steps_per_epoch, t.epochs, enabled=t.progress and ctx.is_main)
        self.optimizer = build_optimizer(self.model, t.lr, t.weight_decay, (t.beta1, t.beta2), t.eps,
                                         objective=self.objective, fused=t.fused_optimizer)
        self.evaluator = Evaluator(
            self.c.eval_set, self.c.tokenizer, self.c.attack, seed=cfg.eval.asr_seed, draws=cfg.eval.asr_draws,
            batch_size=cfg.eval.batch_size, max_images=cfg.eval.max_images, device=self.device, ctx=ctx,
        )
        self.validation = None
        if self.c.validation is not None:
            self.validation = ValidationLoss(self.c.validation, self.c.tokenizer, batch_size=cfg.eval.batch_size,
                                             device=self.device, ctx=ctx)
        self.pos = Position()
        self.last = run.checkpoints / LAST
        # The step a resumed run continues from (set by restore); None for a fresh start.
        self.resume_step: int | None = None

    def _loader(self, text_augment=None):
        cfg, ctx = self.cfg, self.ctx
        return build_train_loader(
            self.c.pairs, tokenizer=self.c.tokenizer, seed=cfg.seed, batch_size=cfg.train.batch_size,
            poisoner=self.c.poisoner, text_augment=text_augment, text_augment_per=cfg.data.text_augment_per,
            num_workers=cfg.data.num_workers, rank=ctx.rank, world_size=ctx.world_size, pin_memory=self._pin_memory,
        )

    @property
    def _pin_memory(self) -> bool:
        return self.cfg.data.pin_memory and self.device.type == "cuda"

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module that runs training forward passes: DDP across ranks, channels_last, compiled."""
        t = self.cfg.train
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.ctx.enabled:
            if t.sync_batchnorm:
                if self.device.type != "cuda":
                    raise ConfigError("train.sync_batchnorm: needs CUDA devices (torch's SyncBatchNorm)")
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.model = model
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if t.compile:
            model = torch.compile(model)
        return model

    # -- state ---------------------------------------------------------------------------------------
    def restore(self) -> None:
        """Resume from ``last.pt``; else start from ``init.checkpoint`` or random weights."""
        init = self.cfg.init
        resuming = distributed.broadcast_object(self.last.is_file(), self.ctx)
        if resuming:
            if not self.last.is_file():
                raise ConfigError(
                    f"rank {self.ctx.rank} cannot see {self.last}, which rank 0 resumes from: the run "
                    "directory must be on a file system that every node shares"
                )
            self._resume_from(ckpt.load_state(self.last))
            if self.ctx.is_main:
                _truncate_metrics(self.run.metrics, self.pos.step)
            self.resume_step = self.pos.step
            log.info("resuming %s at epoch %d, batch %d", self.run.path, self.pos.epoch, self.pos.batch)
            return
        if init.checkpoint:
            load_weights_into(self.model, read_weights(init.checkpoint), init.checkpoint)
            if init.inherit_optimizer:
                path = ckpt.resolve_state_path(init.checkpoint)
                state = ckpt.load_state(path)
                if "optimizer" not in state:
                    raise ConfigError(f"init.inherit_optimizer: {path} holds no optimizer state")
                try:
                    self.optimizer.load_state_dict(self._with_objective_group(state["optimizer"]))
                except (ValueError, KeyError) as err:
                    raise ConfigError(
                        f"init.inherit_optimizer: the optimizer state in {path} does not fit this model's "
                        f"parameter groups ({err}); set init.inherit_optimizer=false"
                    ) from None
        if self.defense is not None:
            # Once, from the starting weights; a resumed run has its result in last.pt already.
            self.defense.start(StartContext(model=self.model, seed=derive_seed(self.cfg.seed, "defense"),
                                            device=self.device, fresh_model=self.fresh_model))
        if self.ctx.is_main:
            self.run.metrics.unlink(missing_ok=True)

    def _with_objective_group(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A pre-training's optimizer state, plus this run's fresh group for the objective's own parameters
        (a head or a bias the pre-training did not have)."""
        ours = self.optimizer.state_dict()["param_groups"]
        if len(saved.get("param_groups", [])) == len(ours) - 1 and ours[-1].get("name") == "objective":
            return {"state": saved["state"], "param_groups": [*saved["param_groups"], ours[-1]]}
        return saved

    def fresh_model(self) -> torch.nn.Module:
        """A freshly initialised model of the run's architecture (never its pretrained weights), the same on
        every rank: the initialisation draws from the CPU generator, seeded and restored around it."""
        section = {k: v for k, v in self.cfg.model.items() if k != "pretrained"}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, "fresh-model"))
            return create_model(**section).model.to(self.device)

    def _resume_from(self, state: Any) -> None:
        """Load a ``last.pt`` state; one that is damaged or another program's is a one-line error."""
        try:
            load_weights_into(self.model, state["model"], str(self.last))
            self.optimizer.load_state_dict(state["optimizer"])
            # The objective's own parameters and buffers (a bias, a head, centroids); older states hold none.
            self.objective.load_state_dict(state.get("objective", {}))
            self.pos = Position(**state["position"])
            torch.set_rng_state(state["torch_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            detail = f"no {err}" if isinstance(err, KeyError) else " ".join(str(err).split())[:200]
            raise ConfigError(
                f"{self.last}: not a training state this run can resume from ({detail}); restore it, or delete "
                "the run directory to start again"
            ) from None

    def save(self, end_of_epoch: bool) -> None:
        if not end_of_epoch:
            self._collect_dropped()
        if self.ctx.is_main:
            if end_of_epoch and self.cfg.train.keep_epoch_checkpoints:
                save_weights(self.run.checkpoints / epoch_weights_name(self.pos.epoch), self.model)
            ckpt.save_state(self.last, {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "objective": self.objective.state_dict(),
                "position": vars(self.pos).copy(), "torch_rng": torch.get_rng_state(),
            })
        # No rank runs ahead of a checkpoint that it might have to resume from.
        distributed.barrier(self.ctx)

    def evaluate(self, logger: RecordLogger) -> dict[str, Any]:
        """Evaluate on every rank (each its shard of the images); rank 0 logs the combined record."""
        start = time.perf_counter()
        metrics = self.evaluator(self.model)
        if self.validation is not None:
            metrics["val_loss"] = round(self.validation(self.model), 6)
        record = {"kind": "eval", "epoch": self.pos.epoch, "step": self.pos.step, **metrics,
                  "eval_seconds": round(time.perf_counter() - start, 3)}
        logger.log(record)
        if self.ctx.is_main:
            log.info("epoch %d: %s", self.pos.epoch, _fmt(metrics))
        return record

    def _sum_over_ranks(self, *values: float) -> list[float]:
        totals = distributed.all_reduce_sum(torch.tensor(values, dtype=torch.float64), self.ctx, self.device)
        return totals.tolist()

    def _collect_dropped(self) -> None:
        """Fold every rank's dropped rows into the (checkpointed) position; all ranks call it together."""
        (total,) = self._sum_over_ranks(self._dropped)
        self.pos.dropped += int(total)
        self._dropped = 0

    def _data_record(self) -> dict[str, Any]:
        """What the training data held and what was skipped before training (logged once per run)."""
        pairs = self.c.pairs
        skipped = dict(getattr(pairs, "skipped", {}) or {})
        return {"kind": "data", "epoch": 0, "step": 0, "split": "train", "rows": len(pairs),
                "skipped_rows": sum(skipped.values()), "skipped": skipped,
                "poisoned_pairs": len(self.c.poisoner.manifest.samples) if self.c.poisoner else 0,
                "world_size": self.ctx.world_size, "device": str(self.device),
                # The model's size, so that reports can put capacity on an axis without building the model.
                "model": self.cfg.model.get("name"), "model_parameters": sum(p.numel() for p in self.model.parameters())}

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
        local = t.batch_size // self.ctx.world_size
        losses = forward_batch(self.forward_model, batch, self.objective, self.normalize, self.c.image_augment,
                               gen, self.device, self.c.poisoner, view_rows=(self.ctx.rank * local, t.batch_size),
                               precision=t.precision, channels_last=t.channels_last)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(
                f"loss is {losses['loss'].item()} at epoch {pos.epoch + 1}, step {pos.step + 1}; "
                "lower train.lr or set train.grad_clip (the last checkpoint is intact)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self._average_objective_grads()
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

    def _average_objective_grads(self) -> None:
        """DDP averages the model's gradients; the objective's own parameters are averaged here. Terms
        compute the global batch's loss on every rank, so this changes nothing but rounding, and keeps the
        ranks' copies identical even for a term that does not."""
        if not self.ctx.enabled:
            return
        for p in self.objective.parameters():
            if p.grad is not None:
                p.grad = distributed.all_reduce_sum(p.grad, self.ctx, self.device) / self.ctx.world_size

    def _start_epoch(self) -> None:
        """Let the objective's terms prepare the epoch (pseudo-labels, a fresh head)."""
        self.objective.start_epoch(EpochContext(
            epoch=self.pos.epoch, device=self.device,
            generator=torch_generator(self.cfg.seed, "objective-epoch", self.pos.epoch),
            embed_images=self.embed_training_images, reset_optimizer_state=self._reset_optimizer_state,
        ))

    def _reset_optimizer_state(self, params: list[torch.nn.Parameter]) -> None:
        for p in params:
            self.optimizer.state.pop(p, None)

    def embed_training_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's training images embedded (original views, triggers applied, eval mode), gathered
        rank-major: the same (N, D) embeddings and (N,) dataset rows on every rank. An indexable dataset is
        read in row order in evaluation-size batches, every row once; a streaming one by one pass of the
        training loader (its shuffled order, less the last partial batch)."""
        cfg, ctx = self.cfg, self.ctx
        loader = build_pass_loader(
            self.c.pairs, tokenizer=self.c.tokenizer, seed=cfg.seed, batch_size=cfg.eval.batch_size,
            poisoner=self.c.poisoner, num_workers=cfg.data.num_workers, rank=ctx.rank, world_size=ctx.world_size,
            pin_memory=self._pin_memory)
        if loader is None:
            loader = self._loader()
            loader.set_epoch(self.pos.epoch)
        return embed_images(self.model, loader, self.normalize, self.device, self.c.poisoner, ctx,
                            precision=cfg.train.precision)

    def train_epoch(self, logger: RecordLogger) -> None:
        t, pos = self.cfg.train, self.pos
        if pos.batch == 0:
            self._start_epoch()
        self.loader.set_epoch(pos.epoch, start_batch=pos.batch)
        bar = self.progress.epoch(self.loader, pos.epoch, pos.batch)
        start = tick = time.perf_counter()
        for batch in bar:
            losses, lr = self.step(batch)
            self._dropped += batch["dropped"]
            if pos.step % t.log_every == 0 or pos.batch == self.steps_per_epoch:
                rows, poisoned = self._sum_over_ranks(len(batch["index"]), int(batch["is_poisoned"].sum()))
                record = {"kind": "train", "epoch": pos.epoch + 1, "step": pos.step, "lr": lr,
                          "logit_scale": self.model.logit_scale.detach().exp().item(),
                          "poisoned_in_batch": int(poisoned)}
                record.update({k: round(v.detach().item(), 6) for k, v in losses.items()})
                seconds = max(time.perf_counter() - tick, 1e-9)
                record["samples_per_second"] = round(rows / seconds, 1)
                logger.log(record)
                bar.note(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
            tick = time.perf_counter()
            every = t.checkpoint_every_steps
            if every and pos.step % every == 0 and pos.batch < self.steps_per_epoch:
                self.save(end_of_epoch=False)
        bar.close()
        self._collect_dropped()
        pos.epoch += 1
        logger.log({"kind": "epoch", "epoch": pos.epoch, "step": pos.step,
                    "train_loss": round(pos.epoch_loss / self.steps_per_epoch, 6),
                    "dropped_rows": pos.dropped,
                    "epoch_seconds": round(time.perf_counter() - start, 2)})
        pos.batch = 0
        pos.epoch_loss = 0.0
        pos.dropped = 0

    def _open_loggers(self) -> MetricsLogger:
        """metrics.jsonl and the experiment loggers of train.report_to (rank 0's only)."""
        return open_loggers(self.run.path, self.run.metrics, self.cfg.to_dict(), self.cfg.train.report_to,
                            self.resume_step)

    def fit(self) -> dict[str, Any]:
        self.restore()
        t, pos = self.cfg.train, self.pos
        self._dropped = 0
        last_eval, logged_data = None, True
        if self.ctx.is_main:
            # A run resumed at an epoch boundary already logged that epoch's evaluation; never log it twice.
            records = read_jsonl(self.run.metrics)
            done = [r for r in records if r["kind"] == "eval" and r["epoch"] == pos.epoch]
            last_eval = done[-1] if done and pos.batch == 0 else None
            logged_data = any(r["kind"] == "data" for r in records)
        # Evaluation is collective: every rank must take the same decisions as rank 0.
        have_eval = distributed.broadcast_object(last_eval is not None, self.ctx)
        with self._open_loggers() if self.ctx.is_main else _NoLog() as logger:
            if self.ctx.is_main and not logged_data:
                logger.log(self._data_record())
            # A run killed after its epoch-0 checkpoint resumes at (0, 0) with that evaluation logged.
            if pos.epoch == 0 and pos.batch == 0 and not have_eval:
                last_eval = self.evaluate(logger)
                self.save(end_of_epoch=True)
            self.model.train()
            while pos.epoch < t.epochs:
                self.train_epoch(logger)
                if self.cfg.eval.every_epoch or pos.epoch == t.epochs:
                    last_eval = self.evaluate(logger)
                self.save(end_of_epoch=True)
            stale = last_eval is None or last_eval["epoch"] != pos.epoch
            if distributed.broadcast_object(stale, self.ctx):
                last_eval = self.evaluate(logger)
        if not t.keep_last_state and self.ctx.is_main:
            # The final weights must exist before last.pt may go (after the summary; see run_training).
            final = self.run.checkpoints / epoch_weights_name(pos.epoch)
            if not final.is_file():
                save_weights(final, self.model)
        poisoner = self.c.poisoner
        return {"status": "complete", "epochs": t.epochs, "steps": pos.step, "final": last_eval,
                "train_pairs": len(self.c.pairs), "poisoned_pairs": len(poisoner.manifest.samples) if poisoner else 0,
                "world_size": self.ctx.world_size}


def run_training(cfg: ExperimentConfig, out_dir: str | Path, ctx: DistContext = SINGLE) -> dict[str, Any]:
    """Train (or clean) according to ``cfg`` in ``out_dir``; returns the run's summary.

    A finished run is not trained again: its summary is returned as is. In a torchrun job every rank
    calls this with its ``ctx``; rank 0 writes the run directory.
    """
    # Every component section checked first: a typo fails in a second, not after the data are built.
    check_components(cfg)
    run = RunDir(out_dir)
    distributed.init(ctx, distributed.device_for(ctx, cfg.train.device))
    if ctx.is_main:
        run.write_config(cfg)
    if distributed.broadcast_object(run.is_complete(), ctx):
        log.info("%s is complete; nothing to do", run.path)
        return run.summary()
    if ctx.is_main:
        # A missing logger package is said now, in one line, not after the data and the model are built.
        check_installed(cfg.train.report_to)
    summary = Trainer(cfg, run, ctx).fit()
    if ctx.is_main:
        atomic_write_json(run.summary_path, summary)
        if not cfg.train.keep_last_state:
            # Only now: a run killed before its summary is written still resumes from last.pt.
            (run.checkpoints / LAST).unlink(missing_ok=True)
    distributed.barrier(ctx)
    return summary


def _fmt(metrics: dict[str, Any]) -> str:
    keys = ("zeroshot_top1", "zeroshot_top5", "asr_top1", "clean_target_rate", "val_loss")
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
