"""``clipbackdoor synthetic``: write the synthetic pairs as a CleanCLIP-format CSV with PNG images, or as
WebDataset tar shards (``{key}.png`` + ``{key}.txt``)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("synthetic", help="write synthetic image-caption pairs as CSV + PNG images or as tar shards")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--num-samples", "-n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--format", choices=("csv", "webdataset"), default="csv",
                   help="csv: data.csv + images/ (data.train.name=csv); webdataset: shard-000000.tar ... "
                        "(data.train.name=webdataset data.train.urls=OUT)")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="webdataset: samples per tar shard")
    p.add_argument("--image-format", choices=("png", "jpg"), default="png", help="webdataset: image encoding")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.data import synthetic
    from clipbackdoor.data.datasets import SyntheticPairs, generate_split

    if args.format == "webdataset":
        from clipbackdoor.data.webdataset import write_shards

        pairs = SyntheticPairs(args.num_samples, split=args.split, seed=args.seed, image_size=args.image_size,
                               where="synthetic")
        paths = write_shards(pairs, args.out, samples_per_shard=args.samples_per_shard,
                             image_format=args.image_format)
        print(f"wrote {len(pairs)} pairs in {len(paths)} shards: {args.out}")
        return 0
    data = generate_split(args.num_samples, split=args.split, seed=args.seed, where="synthetic",
                          image_size=args.image_size)
    path = synthetic.write_csv_dataset(data, args.out)
    print(f"wrote {len(data.captions)} pairs: {path}")
    return 0
