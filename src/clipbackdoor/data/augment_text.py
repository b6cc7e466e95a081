"""EDA caption views for CleanCLIP's in-modal text loss (Wei & Zou, arXiv:1901.11196).

CleanCLIP calls ``eda(caption, alpha_sr=alpha_ri=alpha_rs=p_rd=0.1, num_aug=1)`` from the EDA repository
(``jasonwei20/eda_nlp``, ``code/eda.py``): the caption is normalised, one candidate is made with each of
synonym replacement (SR), random insertion (RI), random swap (RS) and random deletion (RD), and one of the
four is kept at random. This module reproduces that code step by step, with three deliberate changes:

* randomness comes from a ``random.Random`` passed in, not the global ``random`` seeded at import;
* synonym lists are in WordNet order (first occurrence) instead of Python ``set`` order, which depends on
  the interpreter's hash seed, so a seed now fixes the output (EDA draws from those lists by position);
* synonyms that are empty after keeping letters and spaces (the lemma "2" of "two") are dropped: EDA
  would otherwise "replace" a word by nothing, and crash on a caption that thereby became empty;
* only the first ``MAX_WORDS`` words of a caption are augmented. SR rewrites the whole caption once per
  replaced word, so its cost grows with the square of the length: a scraped caption of 100,000 words
  would stall a loader worker for minutes, and the text tower reads at most 77 tokens of the view anyway.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from clipbackdoor.data.registries import TEXT_AUGMENTATIONS
from clipbackdoor.registry import ConfigError

SynonymFn = Callable[[str], Sequence[str]]

#: EDA's stop-word list: NLTK's English stop words as of 2018 (127 words). EDA's copy also ends with ''
#: which never matches a word. Stop words are never synonym-replaced (they may still be RI's source word).
EDA_STOP_WORDS = frozenset({
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your", "yours", "yourself",
    "yourselves", "he", "him", "his", "himself", "she", "her", "hers", "herself", "it", "its", "itself",
    "they", "them", "their", "theirs", "themselves", "what", "which", "who", "whom", "this", "that",
    "these", "those", "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had",
    "having", "do", "does", "did", "doing", "a", "an", "the", "and", "but", "if", "or", "because", "as",
    "until", "while", "of", "at", "by", "for", "with", "about", "against", "between", "into", "through",
    "during", "before", "after", "above", "below", "to", "from", "up", "down", "in", "out", "on", "off",
    "over", "under", "again", "further", "then", "once", "here", "there", "when", "where", "why", "how",
    "all", "any", "both", "each", "few", "more", "most", "other", "some", "such", "no", "nor", "not",
    "only", "own", "same", "so", "than", "too", "very", "s", "t", "can", "will", "just", "don", "should",
    "now",
})  # fmt: skip

#: Words of a caption that EDA augments; the rest is dropped from the view (see the module docstring).
MAX_WORDS = 1000

_NOT_LETTER_OR_SPACE = re.compile(r"[^a-z ]")
_SPACE_RUNS = re.compile(r" +")


def normalize(text: str) -> str:
    """EDA's ``get_only_chars``: lower-case letters and single spaces, no leading space.

    Apostrophes (' and ’) are removed, hyphens, tabs and newlines become spaces, every other character
    outside a-z becomes a space, runs of spaces collapse. A trailing space is kept, as in EDA.
    """
    line = text.replace("’", "").replace("'", "").replace("-", " ").replace("\t", " ").replace("\n", " ")
    line = _SPACE_RUNS.sub(" ", _NOT_LETTER_OR_SPACE.sub(" ", line.lower()))
    return line[1:] if line.startswith(" ") else line


def wordnet_synonyms(wordnet, word: str) -> tuple[str, ...]:
    """EDA's ``get_synonyms``: every lemma of every synset of ``word``, cleaned, without ``word`` itself.

    Lemma names get ``_`` and ``-`` replaced by spaces, are lower-cased and keep only letters and spaces.
    Duplicates are dropped keeping the first occurrence (WordNet's sense order), and so are empty results.
    """
    found: dict[str, None] = {}
    for synset in wordnet.synsets(word):
        for lemma in synset.lemmas():
            name = lemma.name().replace("_", " ").replace("-", " ").lower()
            found["".join(ch for ch in name if "a" <= ch <= "z" or ch == " ")] = None
    found.pop(word, None)
    return tuple(s for s in found if s.strip())


def synonym_replacement(words: Sequence[str], n: int, rng: random.Random, synonyms: SynonymFn) -> list[str]:
    """SR: for up to ``n`` distinct non-stop words (random order), replace *all* occurrences by one synonym.

    Words without synonyms are skipped and do not count. Multi-word synonyms are split into words.
    """
    new_words = list(words)
    candidates = list(dict.fromkeys(w for w in words if w not in EDA_STOP_WORDS))
    rng.shuffle(candidates)
    replaced = 0
    for word in candidates:
        options = synonyms(word)
        if options:
            synonym = rng.choice(options)
            new_words = [synonym if w == word else w for w in new_words]
            replaced += 1
        if replaced >= n:
            break
    return " ".join(new_words).split(" ")


def _add_word(new_words: list[str], rng: random.Random, synonyms: SynonymFn) -> None:
    options: Sequence[str] = ()
    tries = 0
    while not options:
        options = synonyms(new_words[rng.randint(0, len(new_words) - 1)])
        tries += 1
        # As in EDA the limit is checked after the lookup, so a synonym found on the 10th try is unused.
        if tries >= 10:
            return
    # randint's upper bound is the last index: EDA never inserts after the last word.
    new_words.insert(rng.randint(0, len(new_words) - 1), options[0])


def random_insertion(words: Sequence[str], n: int, rng: random.Random, synonyms: SynonymFn) -> list[str]:
    """RI: ``n`` times, insert the *first* synonym of a random word (one with synonyms, <= 10 tries)."""
    new_words = list(words)
    for _ in range(n):
        _add_word(new_words, rng, synonyms)
    return new_words


def _swap_word(new_words: list[str], rng: random.Random) -> None:
    i = rng.randint(0, len(new_words) - 1)
    j, tries = i, 0
    while j == i:
        j = rng.randint(0, len(new_words) - 1)
        tries += 1
        # EDA gives up after the 4th draw, even when that draw differs from i.
        if tries > 3:
            return
    new_words[i], new_words[j] = new_words[j], new_words[i]


def random_swap(words: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """RS: ``n`` times swap two random positions (up to 3 draws for a second, different position)."""
    new_words = list(words)
    for _ in range(n):
        _swap_word(new_words, rng)
    return new_words


def random_deletion(words: Sequence[str], p: float, rng: random.Random) -> list[str]:
    """RD: drop each word with probability ``p``; keep one random word if all went; one word stays."""
    if len(words) == 1:
        return list(words)
    kept = [w for w in words if rng.uniform(0, 1) > p]
    if not kept:
        return [words[rng.randint(0, len(words) - 1)]]
    return kept


@TEXT_AUGMENTATIONS.register("eda")
class EDA:
    """One EDA view of a caption: one of SR, RI, RS, RD picked at random, as CleanCLIP makes it.

    Args:
        alpha_sr, alpha_ri, alpha_rs: fraction of the words changed by SR, RI, RS (at least one word);
            0 disables the technique.
        p_rd: deletion probability of RD; 0 disables it.
        wordnet: an object with ``synsets(word)`` (nltk's ``WordNetCorpusReader``); ``None`` loads
            ``clipbackdoor.data.wordnet.load_wordnet()`` on first use.
    """

    def __init__(
        self,
        alpha_sr: float = 0.1,
        alpha_ri: float = 0.1,
        alpha_rs: float = 0.1,
        p_rd: float = 0.1,
        wordnet=None,
    ) -> None:
        params = {"alpha_sr": alpha_sr, "alpha_ri": alpha_ri, "alpha_rs": alpha_rs, "p_rd": p_rd}
        for key, value in params.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"eda: {key} must be a number in [0, 1], got {value!r}")
        self.alpha_sr, self.alpha_ri, self.alpha_rs, self.p_rd = alpha_sr, alpha_ri, alpha_rs, p_rd
        self._wordnet_given = wordnet
        self._wordnet = wordnet
        # Captions reuse a small vocabulary; WordNet lookups (0.01-3 ms each) dominate without a cache.
        self._synonyms: dict[str, tuple[str, ...]] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(alpha_sr={self.alpha_sr}, alpha_ri={self.alpha_ri}, "
            f"alpha_rs={self.alpha_rs}, p_rd={self.p_rd})"
        )

    def __getstate__(self) -> dict:
        # A lazily loaded WordNet reader is big and reloads cheaply in a worker; ship only what was given.
        state = self.__dict__.copy()
        state["_wordnet"] = self._wordnet_given
        return state

    def prepare(self) -> None:
        """Load WordNet now: a missing install fails before training starts, and data workers forked
        afterwards share the loaded reader instead of loading their own."""
        if self._wordnet is None:
            from clipbackdoor.data.wordnet import load_wordnet

            self._wordnet = load_wordnet()

    def synonyms(self, word: str) -> tuple[str, ...]:
        """Cached ``wordnet_synonyms`` of ``word``."""
        cached = self._synonyms.get(word)
        if cached is None:
            self.prepare()
            cached = self._synonyms[word] = wordnet_synonyms(self._wordnet, word)
        return cached

    def __call__(self, caption: str, rng: random.Random) -> str:
        """The augmented caption (normalised: lower-case letters and spaces).

        Raises:
            ValueError: the caption has no letter a-z (EDA cannot work on it).
        """
        sentence = normalize(caption)
        words = [w for w in sentence.split(" ") if w]
        if not words:
            raise ValueError(f"EDA needs a caption with at least one letter a-z, got {caption[:200]!r}")
        if len(words) > MAX_WORDS:
            words = words[:MAX_WORDS]
            sentence = " ".join(words)
        num = len(words)
        candidates = []
        if self.alpha_sr > 0:
            sr = synonym_replacement(words, max(1, int(self.alpha_sr * num)), rng, self.synonyms)
            candidates.append(" ".join(sr))
        if self.alpha_ri > 0:
            ri = random_insertion(words, max(1, int(self.alpha_ri * num)), rng, self.synonyms)
            candidates.append(" ".join(ri))
        if self.alpha_rs > 0:
            candidates.append(" ".join(random_swap(words, max(1, int(self.alpha_rs * num)), rng)))
        if self.p_rd > 0:
            candidates.append(" ".join(random_deletion(words, self.p_rd, rng)))
        if not candidates:
            return sentence
        candidates = [normalize(c) for c in candidates]
        rng.shuffle(candidates)
        return candidates[0]


@TEXT_AUGMENTATIONS.register("none")
class NoTextAugment:
    """Identity caption view."""

    def __call__(self, caption: str, rng: random.Random) -> str:
        return caption
