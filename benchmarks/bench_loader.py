"""Training-loader throughput from WebDataset shards: samples per second of ``StreamLoader`` batches.

Writes ``--num-samples`` synthetic pairs at ``--image-size`` px as JPEG shards into a temporary folder, times
the index scan, one sequential decode pass (the single-core ceiling of decoding + resizing), and then one
epoch of ``StreamLoader`` batches (decode, resize, tokenize, batch) for each ``--workers`` count.

Usage:
    PYTHONPATH=src python benchmarks/bench_loader.py [--num-samples 4096] [--image-size 224]
        [--samples-per-shard 256] [--batch-size 128] [--workers 0 1 2] [--tokenizer open_clip]
        [--repeats 2] [--threads 1]

Reports the best of ``--repeats`` epochs (the machine may be shared; the minimum time is the least noisy
estimate of what the code costs). Worker start-up (a fork per epoch) is inside the timed epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.data.registries import TOKENIZERS
from clipbackdoor.data.streaming import StreamLoader
from clipbackdoor.data.webdataset import WebDatasetPairs, decode_image, write_shards


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--samples-per-shard", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tokenizer", choices=("open_clip", "words"), default="open_clip",
                        help="open_clip: the BPE tokenizer of RN50/ViT models; words: tiny-clip's")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        source = SyntheticPairs(args.num_samples, image_size=args.image_size)
        paths = write_shards(source, folder, samples_per_shard=args.samples_per_shard, image_format="jpg")
        size = sum(p.stat().st_size for p in paths) / 2**20
        print(f"wrote {args.num_samples} samples at {args.image_size} px as {len(paths)} JPEG shards "
              f"({size:.1f} MiB) in {time.perf_counter() - start:.1f} s")

        pairs = None

        def scan():
            nonlocal pairs
            pairs = WebDatasetPairs(folder, image_size=args.image_size)

        seconds = best_of(args.repeats, scan)
        print(f"index scan: {len(pairs) / seconds:,.0f} samples/s ({seconds * 1000:.0f} ms)")

        def decode_all():
            for shard in range(len(pairs.shards)):
                for index, data in pairs.stream_shard(shard):
                    decode_image(data, args.image_size, "bench")

        seconds = best_of(args.repeats, decode_all)
        print(f"sequential read + decode + resize, 1 core: {len(pairs) / seconds:,.0f} samples/s")

        tokenizer = TOKENIZERS.build({"name": args.tokenizer})
        for workers in args.workers:
            if len(pairs.shards) < max(workers, 1):
                print(f"workers={workers}: skipped (only {len(pairs.shards)} shards)")
                continue
            loader = StreamLoader(pairs, tokenizer=tokenizer, seed=0, batch_size=args.batch_size,
                                  num_workers=workers)

            def epoch():
                loader.set_epoch(0)
                for _ in loader:
                    pass

            seconds = best_of(args.repeats, epoch)
            rows = len(loader) * args.batch_size
            print(f"StreamLoader workers={workers}: {rows / seconds:,.0f} samples/s "
                  f"({len(loader)} batches of {args.batch_size} in {seconds:.2f} s)")


if __name__ == "__main__":
    main()
