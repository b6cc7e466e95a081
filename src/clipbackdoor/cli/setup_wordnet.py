"""``clipbackdoor setup-wordnet``: make Debian's WordNet files readable by nltk (for EDA captions)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("setup-wordnet", help="link Debian's wordnet-base files into an nltk data folder",
                       description="Needs `apt-get install wordnet-base wordnet-sense-index`. Creates "
                                   "DEST/corpora/wordnet with the files and the `lexnames` table nltk expects.")
    p.add_argument("--dest", default=str(Path.home() / "nltk_data"), help="nltk data folder (default ~/nltk_data)")
    p.set_defaults(func=run)


def run(args) -> int:
    from clipbackdoor.data.wordnet import install_wordnet, load_wordnet

    corpus = install_wordnet(Path(args.dest))
    wn = load_wordnet(corpus)
    print(f"WordNet ready at {corpus} ({len(wn.synsets('photo'))} synsets for 'photo')")
    return 0
