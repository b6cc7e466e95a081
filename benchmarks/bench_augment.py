"""Speed of the two CleanCLIP views: batched AutoAugment (images) and EDA (captions).

Usage:
    PYTHONPATH=src python benchmarks/bench_augment.py [--threads 1] [--repeats 5] [--captions 10000]
        [--device cpu] [--skip-torchvision] [--skip-eda]

Images: ms per batch for 256 x 32 px and 64 x 224 px, next to torchvision's ``AutoAugment`` applied
image by image (the way CleanCLIP's data-loader workers do it). Captions: WordNet load time, then EDA on
short synthetic captions with a cold synonym cache (every word looked up once) and a warm one. Reports
the best of ``--repeats`` runs, the least noisy estimate on a shared machine.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from clipbackdoor.data.augment_image import BatchAutoAugment

NOUNS = "dog cat car man woman child house tree street beach city bird horse boat table flower sky".split()
ADJECTIVES = "red small old young happy wooden beautiful white large empty busy green".split()
VERBS = "sitting standing running walking playing parked lying flying".split()
PLACES = "on the beach|in the park|near a river|at night|in the snow|in front of a house".split("|")


def best_ms(fn, repeats: int, inner: int) -> float:
    fn()  # warm-up: allocator, kernels, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return min(times) * 1e3


def bench_images(args) -> None:
    from torchvision.transforms import AutoAugment

    device = torch.device(args.device)
    aug = BatchAutoAugment(fill=0)
    reference = AutoAugment(fill=[0.0, 0.0, 0.0])
    for batch, size in ((256, 32), (64, 224)):
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        gen = torch.Generator().manual_seed(0)

        def run():
            aug(images, gen)
            if device.type == "cuda":
                torch.cuda.synchronize()

        ms = best_ms(run, args.repeats, inner=10 if size == 32 else 3)
        us_per_image = ms / batch * 1e3
        line = f"autoaugment {batch:4d} x {size:3d} px: {ms:8.2f} ms/batch ({us_per_image:6.1f} us/image)"
        if not args.skip_torchvision and device.type == "cpu":
            per_image = best_ms(lambda: [reference(img) for img in images], args.repeats, inner=1)
            line += f"   torchvision per image: {per_image:8.2f} ms/batch ({per_image / ms:.1f}x slower)"
        print(line)


def make_captions(n: int, vocabulary: list[str], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"a {rng.choice(ADJECTIVES)} {rng.choice(vocabulary)} {rng.choice(VERBS)} {rng.choice(PLACES)} "
        f"with a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}."
        for _ in range(n)
    ]


def bench_eda(args) -> None:
    from clipbackdoor.data.augment_text import EDA
    from clipbackdoor.data.wordnet import load_wordnet

    start = time.perf_counter()
    wordnet = load_wordnet()
    print(f"wordnet load: {time.perf_counter() - start:.2f} s")
    # Narrow: a web-caption-like template vocabulary. Wide: one slot filled from 5000 WordNet nouns, so
    # the cold run also pays for thousands of first-time WordNet lookups.
    nouns = sorted(w for w in wordnet.all_lemma_names("n") if w.isalpha())
    wide = random.Random(1).sample(nouns, 5000)
    for label, vocabulary in (("narrow", NOUNS), ("wide", wide)):
        captions = make_captions(args.captions, vocabulary)
        eda = EDA(wordnet=wordnet)
        start = time.perf_counter()
        for i, caption in enumerate(captions):
            eda(caption, random.Random(i))
        cold = time.perf_counter() - start
        warm = best_ms(lambda: [eda(c, random.Random(i)) for i, c in enumerate(captions)], args.repeats, 1)
        warm /= 1e3
        n = len(captions)
        print(f"eda {n} captions, {label} vocabulary ({len(eda._synonyms)} distinct words): "
              f"cold cache {cold:.2f} s ({cold / n * 1e6:.0f} us/caption), "
              f"warm {warm:.2f} s ({warm / n * 1e6:.0f} us/caption)")  # fmt: skip


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--captions", type=int, default=10_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-torchvision", action="store_true", help="skip torchvision's AutoAugment")
    parser.add_argument("--skip-eda", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}")
    bench_images(args)
    if not args.skip_eda:
        bench_eda(args)


if __name__ == "__main__":
    main()
