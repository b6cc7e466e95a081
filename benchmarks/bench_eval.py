"""Zero-shot evaluation throughput: images per second of one ``Evaluator`` pass (clean accuracy and ASR,
so every image is encoded twice: clean and triggered), with the class embeddings built once per pass as
in training. Synthetic images at the model's resolution stand in for ImageNet, whose 80 templates x 1,000
classes are added with ``--imagenet-classes`` to time the text side too.

    python benchmarks/bench_eval.py                                  # tiny-clip, CPU
    python benchmarks/bench_eval.py --model RN50 --images 256 --batch-size 64 --threads 2
    python benchmarks/bench_eval.py --model RN50 --images 10000 --batch-size 500 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import time

import torch

from clipbackdoor.data.eval_datasets import SyntheticClassification
from clipbackdoor.eval.runner import Evaluator
from clipbackdoor.models import create_model
from clipbackdoor.poison.badnet import BadNet


def _fmt(rate: float) -> str:
    return f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-clip")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bundle = create_model(args.model)
    model = bundle.model.to(args.device).eval()
    data = SyntheticClassification(num_samples=args.images, image_size=bundle.image_size)
    evaluator = Evaluator(data, bundle.tokenizer, BadNet(target="banana"), batch_size=args.batch_size,
                          device=args.device)
    with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        evaluator(model)  # warm-up: allocation, cuDNN autotuning
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        metrics = evaluator(model)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"{args.model} zero-shot + ASR on {metrics['eval_images']} images ({bundle.image_size} px), "
          f"{args.device} {args.precision}, {args.threads} thread(s): {_fmt(args.images / seconds)} images/s "
          f"({seconds:.2f} s a pass)")


if __name__ == "__main__":
    main()
