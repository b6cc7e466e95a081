"""Write docs/images/attacks.png: every registered attack, built from its defaults, on the same synthetic images.

    python scripts/make_attack_gallery.py                      # docs/images/attacks.png, 6 images at 32 px
    python scripts/make_attack_gallery.py --out gallery.png --n 8 --image-size 64

An attack whose defaults cannot be built (e.g. one that needs an image file) is skipped, and the script says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.poison import ATTACKS
from clipbackdoor.poison.gallery import write_attack_gallery
from clipbackdoor.registry import ConfigError
from clipbackdoor.seeding import numpy_rng

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "attacks.png"), help="the PNG to write")
    parser.add_argument("--n", type=int, default=6, help="images per row")
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels (the demo models: 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and the trigger instances")
    args = parser.parse_args(argv)

    pairs = SyntheticPairs(num_samples=args.n, split="gallery", image_size=args.image_size, experiment_seed=args.seed)
    attacks = {}
    for name in ATTACKS.names():
        try:
            attack = ATTACKS.build({"name": name}, "attack")
            attack.sample_trigger(numpy_rng(args.seed, "check"), args.image_size)  # fits this image size?
        except (ConfigError, TypeError, ValueError) as err:
            print(f"skipped {name}: its defaults cannot be built ({err})")
            continue
        attacks[name] = attack
    path = write_attack_gallery(pairs, attacks, args.out, n=args.n, seed=args.seed)
    print(f"wrote {path}: {', '.join(attacks)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
