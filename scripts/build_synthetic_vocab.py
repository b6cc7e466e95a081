"""Regenerate ``src/clipbackdoor/data/assets/synthetic_vocab.txt``, the word tokenizer's vocabulary.

The vocabulary is every word the synthetic generator and its prompt templates can produce, plus every word
of their WordNet synonyms, so the caption views EDA makes (synonym replacement and insertion) are
representable instead of collapsing to the unknown token. It is shipped as a file, not computed at run time,
so that checkpoints stay loadable whatever WordNet version a machine has.

    python scripts/build_synthetic_vocab.py
"""

from __future__ import annotations

import re
from pathlib import Path

from clipbackdoor.data import synthetic
from clipbackdoor.data.augment_text import EDA

OUT = Path(__file__).resolve().parents[1] / "src" / "clipbackdoor" / "data" / "assets" / "synthetic_vocab.txt"


def build() -> list[str]:
    eda = EDA()
    words = set(synthetic.VOCABULARY)
    for template in synthetic.TEMPLATES:
        words.update(re.findall(r"[a-z]+", template.lower()))
    for word in sorted(words):
        for synonym in eda.synonyms(word):
            words.update(re.findall(r"[a-z]+", synonym))
    return sorted(words)


if __name__ == "__main__":
    vocab = build()
    OUT.write_text("\n".join(vocab) + "\n")
    print(f"wrote {len(vocab)} words to {OUT}")
