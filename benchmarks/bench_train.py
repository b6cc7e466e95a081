"""Training throughput of the tiny models on this CPU: samples per second of one optimizer step, for MMCL
and MMCL+SSL (which also makes and encodes the augmented views).

    python benchmarks/bench_train.py [--threads 1] [--batch-size 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from clipbackdoor.config import load_config
from clipbackdoor.data.pipeline import EpochBatchSampler, PairBatches
from clipbackdoor.data.transforms import Normalize
from clipbackdoor.objectives import build_objective
from clipbackdoor.seeding import torch_generator
from clipbackdoor.train.loop import forward_batch
from clipbackdoor.train.optim import build_optimizer
from clipbackdoor.train.run import build_components


def measure(objective: dict, args) -> float:
    cfg = load_config(None, [f"model.name={args.model}", f"data.train.num_samples={args.batch_size * 4}",
                             "data.eval.num_samples=10", "poison.budget=0.05"])
    cfg.objective = objective
    c = build_components(cfg, None, torch.device("cpu"))
    obj = build_objective(objective)
    batches = PairBatches(c.pairs, c.tokenizer, seed=0, poisoner=c.poisoner,
                          text_augment=c.text_augment if obj.needs_views else None)
    sampler = EpochBatchSampler(len(c.pairs), args.batch_size, seed=0)
    opt = build_optimizer(c.model, 1e-3, 0.1, (0.9, 0.999), 1e-8)
    norm = Normalize()
    index_lists = list(sampler)
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        batch = batches[index_lists[step % len(index_lists)]]  # batch assembly counts: it is part of a step
        losses = forward_batch(c.model, batch, obj, norm, c.image_augment, torch_generator(step), "cpu")
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        times.append(time.perf_counter() - start)
    steady = sorted(times[3:])[len(times[3:]) // 2]  # median after warm-up
    return args.batch_size / steady


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--model", default="tiny-clip")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name, objective in (("MMCL", {"clip_weight": 1.0, "inmodal_weight": 0.0}),
                            ("MMCL+SSL", {"clip_weight": 1.0, "inmodal_weight": 1.0})):
        print(f"{args.model} {name:<9} batch {args.batch_size}, {args.threads} thread(s): "
              f"{measure(objective, args):.0f} samples/s")


if __name__ == "__main__":
    main()
