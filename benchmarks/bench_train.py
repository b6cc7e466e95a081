"""Training throughput through the real training loop: samples per second of whole optimizer steps
(loading, triggers, views, forward, backward, AdamW), for MMCL and MMCL+SSL.

The data are synthetic pairs generated at the model's resolution, held in memory, so the figure is the
model's and the step's, not a disk's. The first steps (allocation, cuDNN autotuning, compilation) are not
timed.

    python benchmarks/bench_train.py                                   # tiny-clip, CPU, batch 256
    python benchmarks/bench_train.py --model RN50 --batch-size 32 --steps 6 --threads 2
    python benchmarks/bench_train.py --model RN50 --batch-size 256 --device cuda --precision bf16 \
        --channels-last --workers 8                                    # the GPU goal: >= 3,000/s on an H100
"""

from __future__ import annotations

import argparse
import time

import torch

from clipbackdoor.config import load_config
from clipbackdoor.rundir import RunDir
from clipbackdoor.train.loop import Trainer

OBJECTIVES = {"MMCL": "objective.inmodal_weight=0.0", "MMCL+SSL": "objective.inmodal_weight=1.0"}


def measure(objective: str, args, out: str) -> float:
    steps = args.warmup + args.steps
    overrides = [
        f"model.name={args.model}", f"train.batch_size={args.batch_size}", f"train.device={args.device}",
        f"train.precision={args.precision}", f"train.channels_last={str(args.channels_last).lower()}",
        f"train.compile={str(args.compile).lower()}", f"data.num_workers={args.workers}",
        f"data.train.num_samples={args.batch_size * steps}", "data.eval.num_samples=10", "eval.batch_size=10",
        "poison.budget=0.01", "train.progress=false", OBJECTIVES[objective],
    ]
    trainer = Trainer(load_config(None, overrides), RunDir(out))
    trainer.loader.set_epoch(0)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    start = None
    for i, batch in enumerate(trainer.loader):
        if i == args.warmup:
            sync()
            start = time.perf_counter()
        trainer.step(batch)
    sync()
    return args.batch_size * args.steps / (time.perf_counter() - start)


def _fmt(rate: float) -> str:
    return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-clip")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--objective", choices=[*OBJECTIVES, "both"], default="both")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import tempfile

    names = list(OBJECTIVES) if args.objective == "both" else [args.objective]
    for name in names:
        with tempfile.TemporaryDirectory() as out:
            rate = measure(name, args, out)
        flags = " ".join(f for f, on in (("channels_last", args.channels_last), ("compile", args.compile)) if on)
        print(f"{args.model} {name:<9} batch {args.batch_size}, {args.device} {args.precision} {flags} "
              f"({args.threads} thread(s), {args.workers} workers): {_fmt(rate)} samples/s", flush=True)


if __name__ == "__main__":
    main()
