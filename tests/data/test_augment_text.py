"""EDA: each operation with scripted randomness and fake synonyms, normalisation, the full augmenter."""

from __future__ import annotations

import pickle
import random

import pytest

from clipbackdoor.data import augment_text as T
from clipbackdoor.data import wordnet as W
from clipbackdoor.data.registries import TEXT_AUGMENTATIONS
from clipbackdoor.registry import ConfigError


class ScriptedRandom:
    """Stands in for random.Random with scripted answers, so expectations need no re-implementation.

    ``shuffle`` reverses (or keeps) the list, ``choice`` takes the first option, ``randint`` and
    ``uniform`` pop the next scripted value and check it is in range.
    """

    def __init__(self, randints=(), uniforms=(), reverse=False):
        self.randints, self.uniforms, self.reverse = list(randints), list(uniforms), reverse
        self.calls: list[str] = []

    def shuffle(self, items):
        self.calls.append("shuffle")
        if self.reverse:
            items.reverse()

    def choice(self, options):
        self.calls.append("choice")
        return options[0]

    def randint(self, a, b):
        self.calls.append("randint")
        value = self.randints.pop(0)
        assert a <= value <= b
        return value

    def uniform(self, a, b):
        self.calls.append("uniform")
        return self.uniforms.pop(0)


FAKE = {
    "dog": ("hound", "pup"),
    "cat": ("kitty",),
    "car": ("motor car", "auto"),
    "the": ("da",),  # a stop word: SR must never replace it
    "red": ("crimson",),
}


def fake_synonyms(word):
    return FAKE.get(word, ())


class FakeLemma:
    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


class FakeSynset:
    def __init__(self, *names):
        self._lemmas = [FakeLemma(n) for n in names]

    def lemmas(self):
        return self._lemmas


class FakeWordNet:
    """``synsets(word)`` from a table; counts lookups."""

    def __init__(self):
        self.lookups: list[str] = []

    def synsets(self, word):
        self.lookups.append(word)
        return [FakeSynset(word, *FAKE[word])] if word in FAKE else []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Dog, on the BEACH!", "a dog on the beach "),
        ("  leading spaces", "leading spaces"),
        ("don't stop – it’s fine", "dont stop its fine"),
        ("well-known\tdog\nrun", "well known dog run"),
        ("price: $5.99 (approx.)", "price approx "),
        ("café", "caf "),
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert T.normalize(text) == expected


def test_wordnet_synonyms_cleaning_and_order():
    class WN:
        def synsets(self, word):
            return [
                FakeSynset("dog", "domestic_dog", "Canis_familiaris"),
                FakeSynset("hot-dog", "2", "dog", "Domestic_Dog", "u.s."),
            ]

    # Own word dropped, '_'/'-' to space, letters only, lower-case, duplicates and empties removed.
    assert T.wordnet_synonyms(WN(), "dog") == ("domestic dog", "canis familiaris", "hot dog", "us")


def test_synonym_replacement_replaces_all_occurrences():
    rng = ScriptedRandom()
    out = T.synonym_replacement(["dog", "and", "dog", "run"], 1, rng, fake_synonyms)
    assert out == ["hound", "and", "hound", "run"]
    assert rng.calls == ["shuffle", "choice"]


def test_synonym_replacement_counts_only_replaced_words_and_stops_at_n():
    words = ["the", "cow", "cat", "red", "dog"]
    # Shuffle keeps order: "cow" has no synonym and does not count; "cat" and "red" are the 2 replaced.
    replaced = T.synonym_replacement(words, 2, ScriptedRandom(), fake_synonyms)
    assert replaced == ["the", "cow", "kitty", "crimson", "dog"]
    # Reversed order: "dog" then "red".
    assert T.synonym_replacement(words, 2, ScriptedRandom(reverse=True), fake_synonyms) == [
        "the", "cow", "cat", "crimson", "hound",
    ]  # fmt: skip


def test_synonym_replacement_skips_stop_words_and_splits_multiword():
    assert T.synonym_replacement(["the", "the"], 1, ScriptedRandom(), fake_synonyms) == ["the", "the"]
    assert T.synonym_replacement(["a", "car"], 1, ScriptedRandom(), fake_synonyms) == ["a", "motor", "car"]


def test_random_insertion_inserts_first_synonym():
    # Pick word 1 ("dog"), insert its first synonym at position 0.
    rng = ScriptedRandom(randints=[1, 0])
    assert T.random_insertion(["big", "dog"], 1, rng, fake_synonyms) == ["hound", "big", "dog"]
    # n = 2: the second pick lands on the inserted word (no synonym of its own here) and retries.
    rng = ScriptedRandom(randints=[2, 0, 0, 2, 2])
    assert T.random_insertion(["big", "red", "cat"], 2, rng, fake_synonyms) == [
        "kitty", "big", "crimson", "red", "cat",
    ]  # fmt: skip


def test_random_insertion_gives_up_after_ten_tries():
    rng = ScriptedRandom(randints=[0] * 10)
    assert T.random_insertion(["cow", "moo"], 1, rng, fake_synonyms) == ["cow", "moo"]
    assert rng.calls == ["randint"] * 10
    # As in EDA, a synonym found on the 10th try is not used.
    rng = ScriptedRandom(randints=[0] * 9 + [1])
    assert T.random_insertion(["cow", "dog"], 1, rng, fake_synonyms) == ["cow", "dog"]


def test_random_swap():
    assert T.random_swap(["a", "b", "c"], 1, ScriptedRandom(randints=[0, 2])) == ["c", "b", "a"]
    # Second index drawn again while equal to the first.
    assert T.random_swap(["a", "b", "c"], 1, ScriptedRandom(randints=[1, 1, 1, 2])) == ["a", "c", "b"]
    # EDA stops after the 4th draw even when it differs: no swap.
    rng = ScriptedRandom(randints=[1, 1, 1, 1, 2])
    assert T.random_swap(["a", "b", "c"], 1, rng) == ["a", "b", "c"]
    assert rng.randints == []
    # n swaps in sequence.
    assert T.random_swap(["a", "b", "c"], 2, ScriptedRandom(randints=[0, 1, 1, 2])) == ["b", "c", "a"]
    # A single word cannot be swapped; the rng is still drawn as in EDA.
    assert T.random_swap(["a"], 1, ScriptedRandom(randints=[0] * 5)) == ["a"]


def test_random_deletion():
    rng = ScriptedRandom(uniforms=[0.05, 0.5, 0.1, 0.11])
    assert T.random_deletion(["a", "b", "c", "d"], 0.1, rng) == ["b", "d"]  # kept when r > p
    # Everything deleted: one random word survives.
    rng = ScriptedRandom(uniforms=[0.0, 0.0, 0.0], randints=[2])
    assert T.random_deletion(["a", "b", "c"], 0.1, rng) == ["c"]
    # A single word is never deleted and draws nothing.
    rng = ScriptedRandom()
    assert T.random_deletion(["a"], 1.0, rng) == ["a"] and rng.calls == []


def test_eda_is_deterministic_and_uses_only_the_given_rng():
    eda = T.EDA(wordnet=FakeWordNet())
    caption = "The red dog chases a cat near the car, while the cat sleeps."
    state = random.getstate()
    outs = [eda(caption, random.Random(seed)) for seed in range(40)]
    assert random.getstate() == state
    assert outs == [eda(caption, random.Random(seed)) for seed in range(40)]
    assert len(set(outs)) > 10
    for out in outs:
        assert out == T.normalize(out) and out.strip()


def test_eda_output_is_one_of_the_four_candidates():
    caption = "the red dog and the cat"
    words = caption.split()
    for seed in range(30):
        rng = random.Random(seed)
        out = T.EDA(wordnet=FakeWordNet())(caption, rng)
        replay = random.Random(seed)
        candidates = [
            " ".join(T.synonym_replacement(words, 1, replay, fake_synonyms)),
            " ".join(T.random_insertion(words, 1, replay, fake_synonyms)),
            " ".join(T.random_swap(words, 1, replay)),
            " ".join(T.random_deletion(words, 0.1, replay)),
        ]
        replay.shuffle(candidates)
        assert out == candidates[0]


def test_eda_disabled_techniques():
    caption = "the red dog and the cat"
    only_rd = T.EDA(alpha_sr=0, alpha_ri=0, alpha_rs=0, p_rd=0.5, wordnet=FakeWordNet())
    for seed in range(20):
        out = only_rd(caption, random.Random(seed)).split()
        remaining = iter(caption.split())
        assert out and all(w in remaining for w in out)  # an ordered subsequence
    nothing = T.EDA(alpha_sr=0, alpha_ri=0, alpha_rs=0, p_rd=0, wordnet=FakeWordNet())
    assert nothing("The Red-Dog!", random.Random(0)) == "the red dog "


@pytest.mark.parametrize("caption", ["", "   ", "!!! 123 ...", "日本語"])
def test_eda_rejects_captions_without_letters(caption):
    with pytest.raises(ValueError, match="at least one letter") as err:
        T.EDA(wordnet=FakeWordNet())(caption, random.Random(0))
    assert repr(caption) in str(err.value)


def test_long_captions_are_augmented_on_their_first_max_words_words():
    # SR rewrites the caption once per replaced word: without the cut a 60,000-word caption (one scraped
    # alt text) took minutes in a loader worker; with it, the view is made from the first MAX_WORDS words.
    eda = T.EDA(wordnet=FakeWordNet())
    long = " ".join(["the red dog and the cat"] * 10_000)
    for seed in range(3):
        out = eda(long, random.Random(seed)).split()
        head = long.split()[: T.MAX_WORDS]
        assert 0.8 * T.MAX_WORDS <= len(out) <= 1.2 * T.MAX_WORDS  # RD drops ~10%, RI adds ~10%
        synonyms = {word for options in FAKE.values() for option in options for word in option.split()}
        assert set(out) <= set(head) | synonyms
    short = "the red dog and the cat"
    assert eda(short, random.Random(1)) == T.EDA(wordnet=FakeWordNet())(short, random.Random(1))


def test_synonyms_are_cached():
    wn = FakeWordNet()
    eda = T.EDA(wordnet=wn)
    for seed in range(50):
        eda("the red dog and the cat and the cow", random.Random(seed))
    assert len(wn.lookups) == len(set(wn.lookups))


def test_wordnet_loaded_lazily_and_not_pickled(monkeypatch):
    loaded = FakeWordNet()
    monkeypatch.setattr(W, "load_wordnet", lambda root=None: loaded)
    eda = T.EDA()
    assert eda._wordnet is None
    eda("a red dog", random.Random(0))
    assert eda._wordnet is loaded
    clone = pickle.loads(pickle.dumps(eda))
    assert clone._wordnet is None
    assert clone("a red dog", random.Random(0)) == eda("a red dog", random.Random(0))
    given = pickle.loads(pickle.dumps(T.EDA(wordnet=FakeWordNet())))
    assert isinstance(given._wordnet, FakeWordNet)


def test_registry_and_config_checks():
    eda = TEXT_AUGMENTATIONS.build({"name": "eda", "alpha_sr": 0.2})
    assert isinstance(eda, T.EDA) and eda.alpha_sr == 0.2
    assert TEXT_AUGMENTATIONS.build("none")("Keep Me!", random.Random(0)) == "Keep Me!"
    for bad in (-0.1, 1.5, "0.1", None):
        with pytest.raises(ConfigError, match="alpha_ri"):
            T.EDA(alpha_ri=bad)


def test_stop_words_are_edas_list():
    assert len(T.EDA_STOP_WORDS) == 127
    assert {"i", "the", "a", "don", "now", "s", "t"} <= T.EDA_STOP_WORDS
    assert "photo" not in T.EDA_STOP_WORDS


@pytest.fixture(scope="module")
def real_wordnet(tmp_path_factory):
    if not W.DEBIAN_WORDNET.is_dir():
        pytest.skip("Debian's wordnet-base is not installed")
    # The same folder as test_wordnet's fixture, so load_wordnet's cache loads WordNet once per session.
    return W.load_wordnet(W.install_wordnet(tmp_path_factory.getbasetemp() / "nltk_data"))


def test_real_wordnet_synonyms(real_wordnet):
    eda = T.EDA(wordnet=real_wordnet)
    assert {"auto", "automobile", "motorcar"} <= set(eda.synonyms("car"))
    assert {"photograph", "picture"} <= set(eda.synonyms("photo"))
    assert "car" not in eda.synonyms("car")
    # "two" has the lemma "2", which is empty once digits are dropped: not a synonym.
    assert "" not in eda.synonyms("two") and "ii" in eda.synonyms("two")
    out = eda("A photo of a red car parked on the street.", random.Random(0))
    assert out and out == T.normalize(out)
