"""``clipbackdoor synthetic``: write the synthetic pairs as a CleanCLIP-format CSV with PNG images."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("synthetic", help="write synthetic image-caption pairs as CSV + PNG images")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--num-samples", "-n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=int, default=32)
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.data import synthetic
    from clipbackdoor.data.datasets import generate_split

    data = generate_split(args.num_samples, split=args.split, seed=args.seed, where="synthetic",
                          image_size=args.image_size)
    path = synthetic.write_csv_dataset(data, args.out)
    print(f"wrote {len(data.captions)} pairs: {path}")
    return 0
