"""The GPU throughput figures of the open issue, measured in one go; ``benchmarks/gpu_throughput.sh`` runs it.

Subcommands (the shell script calls them in this order):

    probe MODEL                      "CUDA bf16 SIZE": whether torch sees CUDA and bf16 on it, and the model's
                                     input resolution (for the data step)
    gather-data WORK                 the shards that `clipbackdoor synthetic --format webdataset
                                     --image-format jpg` wrote into WORK/parts/* -> WORK/shards/*.tar, and
                                     the same JPEGs as a CleanCLIP-format CSV: WORK/csv/data.csv + images/
    measure --work WORK --out OUT    every measurement below; OUT/results.json is rewritten after each part
    summary --out OUT                OUT/summary.md (and stdout): each figure beside the issue's target
    pretrain-child --peak FILE -- ARGS   `clipbackdoor ARGS` in this process, then its peak GPU memory

What ``measure`` times (pairs/s are training pairs a second, images/s evaluation images a second):

* steady rates (MMCL on the CSV and on the shards, MMCL+SSL, CleanCLIP cleaning): ``Trainer.step`` on the
  trainer's own loader, as ``train_epoch`` runs it. The model is warmed up first on one batch (allocation,
  cuDNN autotuning), then a fresh pass of the loader starts, the first WORKERS + 2 batches (every worker's
  first batch arrives at once) are stepped but not timed, and STEPS steps are timed, waits for the loader
  included. Starting the loader after the warm-up matters: batches prefetched while the first step
  autotunes would be consumed at the model's speed and hide a slow loader.
* model alone: the same steps on one batch already on the device (no loader), also with fused AdamW.
* loader alone: a pass of the loader with no model; the rate over the batches after the first
  2 x WORKERS + 1 (its prefetch), i.e. once it is paced by decoding.
* the whole epoch: a real ``clipbackdoor pretrain`` process for one epoch of the CSV, from its
  ``metrics.jsonl`` and its wall time.
* evaluation: one ``Evaluator`` pass (zero-shot accuracy and ASR: every image clean, and triggered unless
  of the target class) as runs evaluate (fp32, TF32 on) and under bf16 autocast (``bench_eval.py``).
* batch sizes FIT_BATCHES: two MMCL and two MMCL+SSL steps each; out of memory is caught and reported.
* torch.profiler tables: model alone (MMCL and MMCL+SSL), the loader alone in the main process (plus a
  cProfile table, since decoding and tokenizing are not torch ops), one evaluation pass.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import io
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path
from typing import Any

# The targets (RN50, 224 px, batch 256, bf16, one H100/H200) and the old code's figures it quotes.
TARGET_SETUP = {"model": "RN50", "batch": 256, "precision": "bf16"}
EPOCH_SHARE = 0.8  # a whole epoch within 80% of the steady MMCL rate
FIT_GIB = 79.0  # an 80 GB H100 holds 79.6 GiB, less the CUDA context

# key, what, unit, target (a number: at least; None: none), target's text, the old code's figure
FIGURES: list[tuple[str, str, str, float | None, str, str]] = [
    ("mmcl_csv", "MMCL, steady, CSV of JPEGs", "pairs/s", 4000, ">= 4,000", "2,093"),
    ("mmcl_shards", "MMCL, steady, WebDataset shards", "pairs/s", 4000, ">= 4,000", "-"),
    ("mmcl_ssl_csv", "MMCL+SSL, steady, CSV", "pairs/s", 2000, ">= 2,000", "crashed"),
    ("cleanclip_csv", "CleanCLIP cleaning (clip + inmodal, from a checkpoint), steady, CSV", "pairs/s", 2000,
     ">= 2,000", "-"),
    ("epoch", "whole epoch, `clipbackdoor pretrain` (epoch_seconds: loader start-up, warm-up, every step)",
     "pairs/s", None, ">= 80% of MMCL steady (CSV)", "967"),
    ("epoch_eval", "whole epoch + the evaluation after it", "pairs/s", None, "-", "-"),
    ("run", "whole `clipbackdoor pretrain` process (start-up, 2 evaluations, checkpoints, 1 epoch)", "pairs/s",
     None, "-", "-"),
    ("eval_fp32", "zero-shot + ASR evaluation as runs evaluate (fp32, TF32)", "images/s", 10000, ">= 10,000",
     "2,482"),
    ("eval_bf16", "zero-shot + ASR evaluation under bf16 autocast (bench_eval.py)", "images/s", 10000,
     ">= 10,000", "-"),
    ("loader_csv", "loader alone, CSV of JPEGs (MMCL batches)", "pairs/s", None, "-", "-"),
    ("loader_shards", "loader alone, WebDataset shards (MMCL batches)", "pairs/s", None, "-", "-"),
    ("model_mmcl", "model alone, MMCL (one batch on the device)", "pairs/s", None, "-", "-"),
    ("model_mmcl_fused", "model alone, MMCL, train.fused_optimizer=true", "pairs/s", None, "-", "-"),
    ("model_mmcl_ssl", "model alone, MMCL+SSL", "pairs/s", None, "-", "-"),
]
OBJECTIVES = {"mmcl": "objective.inmodal_weight=0.0", "mmcl_ssl": "objective.inmodal_weight=1.0"}
# The part of `measure` that measures each figure (the others: the figure's key is its part's name).
PART_OF = {"loader_csv": "mmcl_csv", "model_mmcl": "mmcl_csv", "model_mmcl_fused": "mmcl_csv",
           "loader_shards": "mmcl_shards", "model_mmcl_ssl": "mmcl_ssl_csv", "epoch": "pretrain_run",
           "epoch_eval": "pretrain_run", "run": "pretrain_run", "eval_fp32": "eval", "eval_bf16": "eval"}


def fit_figures(batches: list[int]) -> list[tuple[str, str, str, float | None, str, str]]:
    return [(f"fit_{b}_{o}", f"batch {b}, {'MMCL' if o == 'mmcl' else 'MMCL+SSL'}: two steps (rate of the second)",
              "pairs/s", None, "fits on an 80 GB card", "-") for b in batches for o in OBJECTIVES]


def all_figures(setup: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, str]]:
    return FIGURES + fit_figures(setup.get("fit_batches", []))


# -- small helpers ------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def _fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:,.1f}" if abs(value) < 100 and digits == 0 else f"{value:,.{digits}f}"
    return str(value)


class PartTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise PartTimeout in this (main) thread after ``seconds``."""
    def on_alarm(signum, frame):
        raise PartTimeout(f"ran past its {seconds:.0f} s limit")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def say(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


# -- data ---------------------------------------------------------------------------------------------------


def image_size(model: str) -> int:
    from clipbackdoor.models.configs import model_config

    cfg = model_config(model)
    if cfg is None:
        raise SystemExit(f"unknown model {model!r}")
    size = cfg["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


def gather_data(work: Path) -> None:
    """WORK/parts/<k>/shard-*.tar -> WORK/shards/p<k>-shard-*.tar, and their JPEGs and captions as a CSV."""
    shards, images = work / "shards", work / "csv" / "images"
    shards.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for part in sorted((work / "parts").iterdir()):
        for shard in sorted(part.glob("*.tar")):
            target = shards / f"p{part.name}-{shard.name}"
            shard.replace(target)
            members: dict[str, dict[str, bytes]] = {}
            with tarfile.open(target) as tar:
                for m in tar:
                    if m.isfile():
                        key, ext = m.name.split(".", 1)
                        members.setdefault(key, {})[ext] = tar.extractfile(m).read()
            for key, sample in members.items():
                name = f"images/p{part.name}-{key}.jpg"
                (work / "csv" / name).write_bytes(sample["jpg"])
                rows.append((name, sample["txt"].decode("utf-8")))
    with open(work / "csv" / "data.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    print(f"{len(rows)} pairs: {len(list(shards.glob('*.tar')))} shards in {shards}, CSV {work / 'csv' / 'data.csv'}")


# -- measuring ----------------------------------------------------------------------------------------------


class Bench:
    """The settings, the device, the results file and the profile files of one ``measure`` run."""

    def __init__(self, args) -> None:
        import torch

        self.args, self.torch = args, torch
        self.work, self.out = Path(args.work), Path(args.out)
        self.cuda = args.device.startswith("cuda")
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: torch sees no CUDA device")
        if self.cuda and ":" in args.device:  # the memory statistics are the current device's
            torch.cuda.set_device(int(args.device.split(":")[1]))
        self.size = image_size(args.model)
        self.patch = max(1, round(16 * self.size / 224))
        self.csv = self.work / "csv" / "data.csv"
        self.shards = self.work / "shards"
        with open(self.csv, encoding="utf-8") as f:
            self.pairs = sum(1 for _ in f) - 1
        self.deadline = args.deadline or (time.time() + 3600)
        self.clean_from: Path | None = None
        self.results = {
            "setup": {
                "model": args.model, "image_size": self.size, "batch": args.batch, "precision": args.precision,
                "device": args.device, "workers": args.workers, "steps": args.steps, "warmup": args.warmup,
                "images": self.pairs, "channels_last": bool(args.channels_last), "eval_images": args.eval_images,
                "eval_batch": args.eval_batch, "run_eval_images": args.run_eval_images,
                "fit_batches": args.fit_batches, "poison_rate": 0.05, "patch_size": self.patch,
                "issue_setup": self.cuda and all(
                    {"model": args.model, "batch": args.batch, "precision": args.precision}[k] == v
                    for k, v in TARGET_SETUP.items()),
            },
            "environment": environment(torch, args.commit),
            "parts": {},
            "figures": {key: {"value": None, "unit": unit, "peak_gib": None, "status": "not measured", "detail": ""}
                        for key, _, unit, *_ in all_figures({"fit_batches": args.fit_batches})},
        }
        self.save()

    # results
    def save(self) -> None:
        _write_json(self.out / "results.json", self.results)

    def figure(self, key: str, value: float, detail: str = "", peak: Any = None, **extra: Any) -> None:
        entry = self.results["figures"][key]
        entry.update(value=round(value, 2), peak_gib=peak, status="measured", detail=detail, **extra)
        say(f"{key}: {_fmt(value)} {entry['unit']}" + (f", peak {_fmt(peak, 2)} GiB" if self.cuda else "")
            + (f" ({detail})" if detail else ""))
        self.save()

    def profile(self, name: str, title: str, text: str) -> None:
        with open(self.out / f"profile_{name}.txt", "a", encoding="utf-8") as f:
            f.write(f"== {title}\n\n{text.rstrip()}\n\n")

    # the device
    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> Any:
        """Peak GPU memory allocated since ``reset_peak``, in GiB; "n/a" without CUDA."""
        if not self.cuda:
            return "n/a"
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 2)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    # trainers
    def overrides(self, objective: str = "mmcl", data: str = "csv", batch: int | None = None) -> list[str]:
        a = self.args
        source = (["data.train.name=csv", f"data.train.path={self.csv}"] if data == "csv" else
                  ["data.train.name=webdataset", f"data.train.urls={self.shards}"] if data == "shards" else
                  ["data.train.name=synthetic", f"data.train.num_samples={batch}"])
        return [
            f"model.name={a.model}", f"train.batch_size={batch or a.batch}", f"train.device={a.device}",
            f"train.precision={a.precision}", f"train.channels_last={'true' if a.channels_last else 'false'}",
            f"data.num_workers={a.workers}", "data.eval.num_samples=10", "eval.batch_size=10",
            "poison.budget=0.05", f"attack.patch_size={self.patch}", "train.progress=false", "train.epochs=1",
            OBJECTIVES[objective], *source,
        ]

    def trainer(self, name: str, overrides: list[str], cfg=None):
        from clipbackdoor.config import load_config
        from clipbackdoor.rundir import RunDir
        from clipbackdoor.train.loop import Trainer

        cfg = cfg or load_config(None, overrides)
        trainer = Trainer(cfg, RunDir(self.work / "runs" / name))
        if len(trainer.loader) == 0:
            raise ValueError(f"{len(trainer.c.pairs)} training pairs make no batch of {cfg.train.batch_size}")
        trainer.model.train()
        return trainer


def environment(torch, commit: str) -> dict[str, Any]:
    import importlib.metadata as md

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": platform.node(), "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda or "-",
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "-",
           "open_clip_torch": version("open_clip_torch"), "commit": commit or "unknown",
           "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(), "gpu": "none"}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}"
        env["gpu_count"] = torch.cuda.device_count()
    return env


def endless(loader):
    """The loader's batches, epoch after epoch (a pass longer than an epoch restarts its workers)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def on_device(batch: dict[str, Any], device) -> dict[str, Any]:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) and k in ("image", "text", "text_aug") else v
            for k, v in batch.items()}


def first_batch(trainer) -> dict[str, Any]:
    it = endless(trainer.loader)
    try:
        return next(it)
    finally:
        it.close()


def model_alone(b: Bench, trainer, batch, steps: int, warmup: int) -> tuple[float, Any]:
    """Pairs/s of ``steps`` optimizer steps on one batch already on the device, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        trainer.step(batch)
    b.reset_peak()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch)
    b.sync()
    return len(batch["index"]) * steps / (time.perf_counter() - start), b.peak()


def steady(b: Bench, trainer, steps: int) -> dict[str, Any]:
    """A fresh pass of the trainer's loader into ``Trainer.step``: the first WORKERS + 2 batches untimed,
    then ``steps`` timed, waits for the loader included."""
    skip = b.args.workers + 2
    it = endless(trainer.loader)
    wait = busy = 0.0
    try:
        b.reset_peak()
        for i in range(skip + steps):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            trainer.step(batch)  # ends with .item() of the loss: the device is done with the step
            t2 = time.perf_counter()
            if i >= skip:
                wait, busy = wait + t1 - t0, busy + t2 - t1
    finally:
        it.close()
    rows = steps * trainer.cfg.train.batch_size
    crossed = (skip + steps) > len(trainer.loader)
    return {"value": rows / (wait + busy), "peak": b.peak(), "loader_wait_share": round(wait / (wait + busy), 3),
            "step_ms": round(1000 * busy / steps, 2), "crossed_epoch": crossed}


def loader_alone(b: Bench, loader, batches: int) -> dict[str, Any]:
    """Batch arrival times of a fresh pass with nothing consuming them; the rate once its prefetch is spent."""
    skip = min(2 * b.args.workers + 1, batches // 2)
    it = endless(loader)
    times = []
    try:
        b.reset_peak()
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
            times.append(time.perf_counter())
    finally:
        it.close()
    rows = len(batch["index"])
    paced = rows * (batches - 1 - skip) / (times[-1] - times[skip]) if batches - 1 > skip else math.nan
    return {"value": paced, "whole_pass": rows * batches / (times[-1] - start), "first_batch_s": times[0] - start,
            "peak": b.peak()}


def profile_model(b: Bench, trainer, batch, title: str) -> None:
    from torch.profiler import ProfilerActivity, profile, record_function

    import clipbackdoor.train.loop as loop

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if b.cuda else [])
    real = loop.forward_batch

    def labelled(*args, **kwargs):  # the forward pass as one row (backward and AdamW have their own)
        with record_function("forward_batch (views, model, losses)"):
            return real(*args, **kwargs)

    loop.forward_batch = labelled
    try:
        for _ in range(2):
            trainer.step(batch)
        b.sync()
        with profile(activities=acts) as prof:
            for _ in range(b.args.profile_steps):
                trainer.step(batch)
            b.sync()
    finally:
        loop.forward_batch = real
    averages = prof.key_averages()
    tables = []
    if b.cuda:
        for key in ("self_device_time_total", "self_cuda_time_total"):
            with contextlib.suppress(Exception):
                tables.append(f"top ops by self CUDA time:\n{averages.table(sort_by=key, row_limit=b.args.rows)}")
                break
    tables.append(f"top ops by self CPU time:\n{averages.table(sort_by='self_cpu_time_total', row_limit=b.args.rows)}")
    b.profile("model", f"{title}: {b.args.profile_steps} steps on one batch of {len(batch['index'])} on the device",
              "\n".join(tables))


def profile_loader(b: Bench, trainer, title: str) -> None:
    """torch.profiler and cProfile of a few batches made in this process (0 workers)."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity, profile

    from clipbackdoor.objectives import VIEWS

    views = VIEWS in trainer.objective.needs
    loader = trainer._loader(text_augment=trainer.c.text_augment if views else None, num_workers=0)
    n = b.args.profile_batches
    it = endless(loader)
    try:
        next(it)  # opens the first files, fills caches
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                next(it)
        seconds = time.perf_counter() - start
        stats = io.StringIO()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            next(it)
        profiler.disable()
    finally:
        it.close()
    pstats.Stats(profiler, stream=stats).sort_stats("tottime").print_stats(b.args.rows)
    rate = n * trainer.cfg.train.batch_size / seconds
    text = (f"{n} batches in {seconds:.2f} s: {rate:,.0f} pairs/s in one process\n\n"
            f"torch.profiler, top torch ops by self CPU time (decoding and tokenizing are not torch ops; their "
            f"time is the gap between these rows and the wall time above):\n"
            f"{prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=b.args.rows)}\n\n"
            f"cProfile of {n} more batches, Python functions by own time:\n{stats.getvalue().strip()}")
    b.profile("loader", f"{title}, loader alone in the main process (0 workers)", text)


# -- the parts ----------------------------------------------------------------------------------------------


def part_train(b: Bench, key: str, objective: str, data: str, loader_key: str | None = None,
               model_key: str | None = None, profile_title: str | None = None, cfg=None) -> None:
    """A trainer's steady rate; optionally its loader alone, its model alone and their profiles (the
    loader's always, the model's unless the part has no ``model_key``)."""
    a = b.args
    trainer = b.trainer(key, b.overrides(objective, data), cfg=cfg)
    if cfg is not None:
        trainer.restore()  # the checkpoint to clean, and the defense's start
        trainer.model.train()
    if loader_key:
        got = loader_alone(b, trainer.loader, min(len(trainer.loader), a.warmup + a.steps + a.workers + 2))
        value, peak = got.pop("value"), got.pop("peak")
        b.figure(loader_key, value, f"{a.workers} workers; whole pass with the workers' start "
                 f"{got['whole_pass']:,.0f}/s, first batch after {got['first_batch_s']:.2f} s", peak=peak, **got)
    batch = on_device(first_batch(trainer), trainer.device)
    rate, peak = model_alone(b, trainer, batch, a.steps, a.warmup)
    if model_key:
        b.figure(model_key, rate, f"{a.steps} steps after {a.warmup}", peak=peak)
    got = steady(b, trainer, a.steps)
    value, peak = got.pop("value"), got.pop("peak")
    b.figure(key, value, f"{a.steps} steps after {a.workers + 2} untimed; waiting for the loader "
             f"{100 * got['loader_wait_share']:.0f}% of the time; model alone {rate:,.0f}/s"
             + ("; the pass crossed an epoch end (IMAGES too small)" if got["crossed_epoch"] else ""),
             peak=peak, model_alone=round(rate, 1), **got)
    if model_key == "model_mmcl":
        # The same steps with fused AdamW: a second optimizer over the same parameters.
        from clipbackdoor.train.optim import build_optimizer

        t = trainer.cfg.train
        plain = trainer.optimizer
        trainer.optimizer = build_optimizer(trainer.model, t.lr, t.weight_decay, (t.beta1, t.beta2), t.eps,
                                            objective=trainer.objective, fused=True)
        rate, peak = model_alone(b, trainer, batch, a.steps, a.warmup)
        b.figure("model_mmcl_fused", rate, f"{a.steps} steps after {a.warmup}", peak=peak)
        trainer.optimizer = plain
        del plain
        from clipbackdoor.models.weights import save_weights

        # The checkpoint that the CleanCLIP part cleans (a file outside any run directory).
        weights = b.work / "mmcl-weights" / "checkpoints" / "mmcl.safetensors"
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_weights(weights, trainer.model)
        b.clean_from = weights
    if profile_title:
        if model_key:
            profile_model(b, trainer, batch, profile_title)
        profile_loader(b, trainer, profile_title)


def part_mmcl_csv(b: Bench) -> None:
    part_train(b, "mmcl_csv", "mmcl", "csv", loader_key="loader_csv", model_key="model_mmcl",
               profile_title="MMCL, CSV of JPEGs")


def part_mmcl_shards(b: Bench) -> None:
    part_train(b, "mmcl_shards", "mmcl", "shards", loader_key="loader_shards", profile_title="MMCL, WebDataset shards")


def part_mmcl_ssl_csv(b: Bench) -> None:
    part_train(b, "mmcl_ssl_csv", "mmcl_ssl", "csv", model_key="model_mmcl_ssl", profile_title="MMCL+SSL, CSV")


def part_cleanclip_csv(b: Bench) -> None:
    from clipbackdoor.experiments.stages import clean_config

    if b.clean_from is None:
        raise RuntimeError("no checkpoint to clean: the mmcl_csv part did not save one")
    # The cleaning config sets the poison budget (0) and the defense the objective; the attack is measured.
    keep = [o for o in b.overrides("mmcl", "csv") if not o.startswith(("poison.", "attack.", "objective."))]
    cfg = clean_config(b.clean_from, None, [*keep, f"attack.patch_size={b.patch}"], defense="cleanclip")
    part_train(b, "cleanclip_csv", "mmcl", "csv", cfg=cfg)
    f = b.results["figures"]["cleanclip_csv"]
    f["detail"] += f"; objective clip {cfg.objective['clip_weight']} + inmodal {cfg.objective['inmodal_weight']}"
    b.save()


def part_eval(b: Bench) -> None:
    import torch

    from clipbackdoor.data.eval_datasets import SyntheticClassification
    from clipbackdoor.eval.runner import Evaluator
    from clipbackdoor.models import create_model
    from clipbackdoor.poison.badnet import BadNet

    a = b.args
    device = torch.device(a.device)
    if b.cuda:  # as Trainer sets them (train.tf32 is on by default)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    bundle = create_model(a.model)
    model = bundle.model.to(device).eval()
    distinct = min(a.eval_images, a.eval_distinct)
    data = SyntheticClassification(num_samples=distinct, image_size=bundle.image_size)
    if a.eval_images > distinct:  # the encoder's speed does not depend on what the images show
        reps = math.ceil(a.eval_images / distinct)
        data.images = data.images.repeat(reps, 1, 1, 1)[: a.eval_images]
        data.labels = data.labels.repeat(reps)[: a.eval_images]
    attack = BadNet(target="banana", patch_size=b.patch)
    evaluator = Evaluator(data, bundle.tokenizer, attack, batch_size=a.eval_batch, device=device)
    for key, bf16 in (("eval_fp32", False), ("eval_bf16", True)):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            evaluator(model)  # warm-up: allocation, cuDNN autotuning
            b.reset_peak()
            times = []
            for _ in range(a.eval_passes):
                start = time.perf_counter()
                metrics = evaluator(model)
                b.sync()
                times.append(time.perf_counter() - start)
        n = metrics["eval_images"]
        b.figure(key, n / min(times), f"best of {len(times)} passes over {n} images ({distinct} distinct, "
                 f"{metrics.get('asr_images', 0)} also triggered), batch {a.eval_batch}: "
                 + ", ".join(f"{s:.2f} s" for s in times), peak=b.peak())
    from torch.profiler import ProfilerActivity, profile

    small = Evaluator(data, bundle.tokenizer, attack, batch_size=a.eval_batch, device=device,
                      max_images=min(a.eval_images, 2 * a.eval_batch))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if b.cuda else [])
    with profile(activities=acts) as prof:
        small(model)
        b.sync()
    sort = "self_device_time_total" if b.cuda else "self_cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort, row_limit=a.rows)
    except Exception:  # older torch: self_cuda_time_total
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=a.rows)
    b.profile("eval", f"one evaluation pass over {len(small.indices)} images (fp32, as runs evaluate), "
              f"top ops by {sort}", table)


def part_pretrain_run(b: Bench, limit: float) -> None:
    """One epoch of a real `clipbackdoor pretrain` process on the CSV."""
    a = b.args
    run = b.work / "runs" / "pretrain-mmcl"
    peak_file = b.work / "pretrain-peak.json"
    log_file = b.work / "pretrain.log"
    argv = ["pretrain", "--config", "mmcl", "--out", str(run), f"model.name={a.model}", "data.train.name=csv",
            f"data.train.path={b.csv}", f"data.eval.num_samples={a.run_eval_images}", f"eval.batch_size={a.eval_batch}",
            "poison.budget=0.05", f"attack.patch_size={b.patch}", "train.epochs=1", "train.log_every=1",
            "train.progress=false", f"data.num_workers={a.workers}", f"train.batch_size={a.batch}",
            f"train.precision={a.precision}", f"train.channels_last={'true' if a.channels_last else 'false'}",
            f"train.device={a.device}"]
    cmd = [sys.executable, __file__, "pretrain-child", "--peak", str(peak_file), "--", *argv]
    say("running", " ".join(cmd[2:]))
    start = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(limit - 5, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise PartTimeout(f"clipbackdoor pretrain ran past {limit - 5:.0f} s (its log: {log_file})") from None
    wall = time.perf_counter() - start
    tail = log_file.read_text(errors="replace").strip().splitlines()[-15:]
    print("\n".join("    | " + line for line in tail), flush=True)
    if rc != 0:
        raise RuntimeError(f"clipbackdoor pretrain exited {rc}: {tail[-1] if tail else ''}")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epoch = [r for r in records if r["kind"] == "epoch"][-1]
    evals = [r for r in records if r["kind"] == "eval"]
    rates = [r["samples_per_second"] for r in records if r["kind"] == "train"]
    pairs = epoch["step"] * a.batch
    peak = json.loads(peak_file.read_text()).get("peak_gib") if peak_file.is_file() else None
    peak = peak if b.cuda else "n/a"
    eval_s = [r["eval_seconds"] for r in evals]
    within = statistics.median(rates[2:]) if len(rates) > 2 else statistics.median(rates)
    detail = (f"{epoch['step']} steps, {pairs} pairs in {epoch['epoch_seconds']:.2f} s; median step inside the "
              f"run (after the first 2) {within:,.0f}/s")
    b.figure("epoch", pairs / epoch["epoch_seconds"], detail, peak=peak, epoch_seconds=epoch["epoch_seconds"],
             median_step_rate=within, steps=epoch["step"])
    b.figure("epoch_eval", pairs / (epoch["epoch_seconds"] + eval_s[-1]),
             f"epoch {epoch['epoch_seconds']:.2f} s + evaluation {eval_s[-1]:.2f} s "
             f"({evals[-1]['eval_images']} images: {evals[-1]['eval_images'] / eval_s[-1]:,.0f} images/s)", peak=peak)
    rest = wall - epoch["epoch_seconds"] - sum(eval_s)
    b.figure("run", pairs / wall, f"process {wall:.1f} s: epoch {epoch['epoch_seconds']:.1f} s, evaluations "
             + " + ".join(f"{s:.1f}" for s in eval_s) + f" s, the rest (imports, data index, model, "
             f"evaluation images, checkpoints) {rest:.1f} s", peak=peak, wall_seconds=round(wall, 2))


def part_batch_fit(b: Bench) -> None:
    import torch

    a = b.args
    for batch_size in a.fit_batches:
        for objective in OBJECTIVES:
            key = f"fit_{batch_size}_{objective}"
            data = "csv" if b.pairs >= batch_size else "synthetic"
            trainer = None
            try:
                trainer = b.trainer(key, b.overrides(objective, data, batch=batch_size))
                batch = on_device(first_batch(trainer), trainer.device)
                b.reset_peak()
                trainer.step(batch)
                start = time.perf_counter()
                trainer.step(batch)
                seconds = time.perf_counter() - start
                if b.cuda:
                    reserved = round(torch.cuda.max_memory_reserved() / 2**30, 2)
                    fits = reserved <= FIT_GIB
                    how = f"{'fits' if fits else f'ran, but reserved more than {FIT_GIB} GiB'}: peak reserved " \
                          f"{reserved:.2f} GiB"
                else:
                    reserved, fits, how = "n/a", None, "ran (on the CPU: no GPU memory to fit)"
                b.figure(key, batch_size / seconds, f"{how}; {data} batches", peak=b.peak(), fits=fits,
                         reserved_gib=reserved)
            except torch.cuda.OutOfMemoryError as err:
                entry = b.results["figures"][key]
                entry.update(status="out of memory", fits=False, detail=" ".join(str(err).split())[:300])
                say(f"{key}: out of memory")
                b.save()
            except PartTimeout:
                raise
            except Exception as err:  # one batch size's failure must not cost the others
                traceback.print_exc()
                entry = b.results["figures"][key]
                entry.update(status="error", detail=f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
                b.save()
            finally:
                del trainer
                batch = None
                b.free()


PARTS = [  # in order of importance, should time run out; (name, seconds at most)
    ("mmcl_csv", 150), ("eval", 90), ("mmcl_ssl_csv", 120), ("cleanclip_csv", 90), ("mmcl_shards", 90),
    ("pretrain_run", 150), ("batch_fit", 120),
]


def measure(args) -> int:
    b = Bench(args)
    for name in ("model", "loader", "eval"):
        (b.out / f"profile_{name}.txt").write_text(
            f"# {name}: {args.model}, batch {args.batch}, {args.precision}, {args.device}, "
            f"{args.workers} loader workers; written by benchmarks/bench_throughput.py\n\n")
    say(f"measuring {args.model} at {b.size} px, batch {args.batch}, {args.precision} on {args.device}, "
        f"{args.workers} workers, {b.pairs} pairs; {b.results['environment']['gpu']}")
    failed = 0
    for name, cap in PARTS:
        left = b.deadline - time.time() - 5
        limit = min(cap, left)
        entry = {"status": "skipped", "seconds": 0.0}
        b.results["parts"][name] = entry
        if args.only and name not in args.only:
            entry["error"] = "not in --only"
            continue
        if limit < 10:
            entry["error"] = f"out of time ({left:.0f} s left of the budget)"
            say(f"== {name}: skipped, out of time")
            failed += 1
            b.save()
            continue
        say(f"== {name} (at most {limit:.0f} s)")
        start = time.perf_counter()
        try:
            if name == "pretrain_run":
                part_pretrain_run(b, limit)
            else:
                with time_limit(limit):
                    globals()[f"part_{name}"](b)
            entry["status"] = "ok"
        except PartTimeout as err:
            entry.update(status="timeout", error=str(err))
            failed += 1
        except Exception as err:  # one part's failure must not cost the other figures
            traceback.print_exc()
            entry.update(status="error", error=f"{type(err).__name__}: {' '.join(str(err).split())[:400]}")
            failed += 1
        entry["seconds"] = round(time.perf_counter() - start, 1)
        if entry["status"] != "ok":
            say(f"== {name}: {entry['status']}: {entry.get('error')}")
        b.free()
        b.save()
    return 1 if failed else 0


# -- the summary --------------------------------------------------------------------------------------------


def meets(key: str, target: float | None, figures: dict[str, Any], setup: dict[str, Any]) -> str:
    f = figures[key]
    if not setup.get("issue_setup"):
        return "n/a"
    if key.startswith("fit_"):
        return "yes" if f.get("fits") else "no" if f.get("fits") is False else "-"
    if f["value"] is None:
        return "-"
    if key == "epoch":
        base = figures["mmcl_csv"]["value"]
        return "-" if base is None else "yes" if f["value"] >= EPOCH_SHARE * base else "no"
    return "-" if target is None else "yes" if f["value"] >= target else "no"


def summary(out: Path) -> str:
    data = json.loads((out / "results.json").read_text())
    s, env, figures = data["setup"], data["environment"], data["figures"]
    lines = [
        "# GPU throughput (benchmarks/gpu_throughput.sh)", "",
        f"{env['date']} · {s['model']} at {s['image_size']} px, batch {s['batch']}, {s['precision']}, "
        f"channels_last {str(s['channels_last']).lower()}, {s['workers']} loader workers, on {s['device']} · "
        f"{env['gpu']} · torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, {env['cpus']} CPUs · "
        f"commit {env['commit']}", "",
        f"Training data: {s['images']} generated pairs, {s['image_size']} px JPEGs, as a CSV and as shards; "
        f"{s['steps']} timed steps a measurement; 5% of the pairs poisoned (BadNet, {s['patch_size']} px patch). "
        f"Evaluation: {s['eval_images']} synthetic images, batch {s['eval_batch']}.", "",
    ]
    if not s.get("issue_setup"):
        lines += ["Not the issue's setup (RN50, batch 256, bf16 on a CUDA device): the 'meets' column is n/a.", ""]
    rows = [("figure", "measured", "peak GPU memory", "target", "old code", "meets")]
    for key, what, unit, target, target_text, old in all_figures(s):
        f = figures[key]
        if f["value"] is not None:
            value = f"{_fmt(f['value'])} {unit}"
            if key == "epoch" and figures["mmcl_csv"]["value"]:
                value += f" ({100 * f['value'] / figures['mmcl_csv']['value']:.0f}% of steady)"
        else:
            part = data["parts"].get("batch_fit" if key.startswith("fit_") else PART_OF.get(key, key), {})
            value = f["status"]
            if value == "not measured" and part.get("status") not in (None, "ok"):
                value += f" (part {part['status']})"
        peak = f["peak_gib"]
        peak = f"{_fmt(peak, 2)} GiB" if isinstance(peak, (int, float)) else (peak or "-")
        rows.append((what, value, peak, target_text, old, meets(key, target, figures, s)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["", "Details:", ""]
    for key, what, *_ in all_figures(s):
        detail = figures[key].get("detail")
        if detail:
            lines.append(f"- {key}: {detail}")
    lines += ["", "Parts:", ""]
    for name, part in data["parts"].items():
        error = f": {part['error']}" if part.get("error") else ""
        lines.append(f"- {name}: {part['status']}, {part['seconds']} s{error}")
    lines += ["", "Profiles: profile_model.txt (model alone), profile_loader.txt (loader alone), profile_eval.txt "
              "(one evaluation pass). Definitions: docs/benchmarks.md, section 'GPU throughput (open)'."]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


# -- command line -------------------------------------------------------------------------------------------


def pretrain_child(peak: Path, argv: list[str]) -> int:
    import torch

    from clipbackdoor.cli import main

    rc = main(argv)
    used = torch.cuda.is_available() and torch.cuda.is_initialized()
    _write_json(peak, {"rc": rc, "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if used else None})
    return rc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("probe")
    s.add_argument("model")
    s = sub.add_parser("gather-data")
    s.add_argument("work", type=Path)
    s = sub.add_parser("summary")
    s.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("pretrain-child")
    s.add_argument("--peak", type=Path, required=True)
    s.add_argument("argv", nargs=argparse.REMAINDER)
    s = sub.add_parser("measure")
    s.add_argument("--work", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--model", default="RN50")
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    s.add_argument("--device", default="cuda")
    s.add_argument("--workers", type=int, default=8)
    s.add_argument("--steps", type=int, default=40, help="timed steps of each measurement")
    s.add_argument("--warmup", type=int, default=5, help="untimed steps on one batch first (cuDNN autotuning)")
    s.add_argument("--channels-last", type=int, choices=(0, 1), default=1)
    s.add_argument("--eval-images", type=int, default=10000)
    s.add_argument("--eval-distinct", type=int, default=1000, help="images generated; the rest repeat them")
    s.add_argument("--eval-batch", type=int, default=500)
    s.add_argument("--eval-passes", type=int, default=2)
    s.add_argument("--run-eval-images", type=int, default=500, help="evaluation images of the pretrain run")
    s.add_argument("--fit-batches", type=int, nargs="*", default=[512, 1024])
    s.add_argument("--profile-steps", type=int, default=5)
    s.add_argument("--profile-batches", type=int, default=2)
    s.add_argument("--rows", type=int, default=30, help="rows of each profile table")
    s.add_argument("--deadline", type=float, default=0.0, help="time.time() by which to stop (0: an hour)")
    s.add_argument("--commit", default="")
    s.add_argument("--only", nargs="*", help="run only these parts (for debugging)")
    args = p.parse_args()
    if args.command == "probe":
        import nltk  # noqa: F401  (the packages a run needs)
        import open_clip  # noqa: F401
        import torch
        import webdataset  # noqa: F401

        import clipbackdoor  # noqa: F401

        cuda = torch.cuda.is_available()
        print(int(cuda), int(cuda and torch.cuda.is_bf16_supported()), image_size(args.model))
        return 0
    if args.command == "gather-data":
        gather_data(args.work)
        return 0
    if args.command == "summary":
        print(summary(args.out), end="")
        return 0
    if args.command == "pretrain-child":
        return pretrain_child(args.peak, args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
