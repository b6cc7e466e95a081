"""Installing and loading WordNet from Debian's packages."""

from __future__ import annotations

import gzip
import os
import re
import stat
from pathlib import Path

import nltk
import pytest

from clipbackdoor.data import wordnet as W

MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
needs_debian_wordnet = pytest.mark.skipif(
    not W.DEBIAN_WORDNET.is_dir(), reason="Debian's wordnet-base / wordnet-sense-index are not installed"
)


@pytest.fixture
def fake_source(tmp_path):
    """A folder with every database file (dummy content): enough for install_wordnet."""
    source = tmp_path / "source"
    source.mkdir()
    for name in W.CORPUS_FILES:
        (source / name).write_text(f"dummy {name}\n")
    return source


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not W.DEBIAN_WORDNET.is_dir():
        pytest.skip("Debian's wordnet-base / wordnet-sense-index are not installed")
    # The same folder as test_augment_text's fixture, so load_wordnet's cache loads WordNet once per session.
    return W.install_wordnet(tmp_path_factory.getbasetemp() / "nltk_data")


def test_lexnames_table():
    assert [num for num, _, _ in W.LEXNAMES] == list(range(45))
    category = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
    for _, name, cat in W.LEXNAMES:
        assert cat == category[name.split(".")[0]], name
    lines = W.lexnames_text().splitlines()
    assert lines[0] == "00\tadj.all\t3" and lines[-1] == "44\tadj.ppl\t3" and len(lines) == 45


@pytest.mark.skipif(not MAN_PAGE.exists(), reason="lexnames(5WN) man page not installed")
def test_lexnames_match_man_page():
    text = gzip.decompress(MAN_PAGE.read_bytes()).decode()
    rows = [line.split("\t") for line in text.splitlines() if re.match(r"\d\d\t", line)]
    expected = [(num, name) for num, name, _ in W.LEXNAMES]
    assert [(int(num), name.strip()) for num, name, *_ in rows] == expected


def test_install_copies_files_and_writes_lexnames(tmp_path, fake_source):
    corpus = W.install_wordnet(tmp_path / "nltk_data", source=fake_source)
    assert corpus == tmp_path / "nltk_data" / "corpora" / "wordnet"
    for name in (*W.CORPUS_FILES, "lexnames"):
        path = corpus / name
        # nltk refuses symlinks, hard links and group/world-writable files.
        assert path.is_file() and not path.is_symlink() and path.stat().st_nlink == 1
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert (corpus / "data.noun").read_text() == "dummy data.noun\n"
    assert (corpus / "lexnames").read_text() == W.lexnames_text()


def test_install_is_idempotent_and_replaces_symlinks(tmp_path, fake_source):
    corpus = W.install_wordnet(tmp_path, source=fake_source)
    inode = (corpus / "data.noun").stat().st_ino
    assert W.install_wordnet(tmp_path, source=fake_source) == corpus
    assert (corpus / "data.noun").stat().st_ino == inode  # unchanged files are not copied again
    # An older install made of symlinks (which current nltk refuses) is repaired.
    (corpus / "data.adj").unlink()
    (corpus / "data.adj").symlink_to(fake_source / "data.adj")
    (corpus / "lexnames").write_text("stale\n")
    W.install_wordnet(tmp_path, source=fake_source)
    assert not (corpus / "data.adj").is_symlink() and (corpus / "data.adj").read_text() == "dummy data.adj\n"
    assert (corpus / "lexnames").read_text() == W.lexnames_text()


def test_install_from_missing_or_incomplete_source(tmp_path, fake_source):
    with pytest.raises(W.WordNetNotFound) as err:
        W.install_wordnet(tmp_path / "out", source=tmp_path / "nowhere")
    assert "apt-get install wordnet-base wordnet-sense-index" in str(err.value)
    assert "clipbackdoor setup-wordnet" in str(err.value)
    (fake_source / "index.sense").unlink()
    with pytest.raises(W.WordNetNotFound, match="index.sense.*apt-get install"):
        W.install_wordnet(tmp_path / "out", source=fake_source)


def test_find_wordnet(tmp_path, fake_source, monkeypatch):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    with pytest.raises(W.WordNetNotFound, match="clipbackdoor setup-wordnet"):
        W.find_wordnet()
    corpus = W.install_wordnet(tmp_path / "data", source=fake_source)
    assert W.find_wordnet([tmp_path / "data"]) == corpus  # a data dir
    assert W.find_wordnet([corpus]) == corpus  # the corpus dir itself
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty"), str(tmp_path / "data")])
    assert W.find_wordnet() == corpus
    # A corpus missing a file does not count.
    (corpus / "lexnames").unlink()
    with pytest.raises(W.WordNetNotFound):
        W.find_wordnet([corpus])


def test_load_rejects_non_corpus(tmp_path):
    with pytest.raises(W.WordNetNotFound, match="not a WordNet corpus"):
        W.load_wordnet(tmp_path)


@needs_debian_wordnet
def test_load_installed_corpus(corpus):
    wn = W.load_wordnet(corpus)
    assert wn is W.load_wordnet(str(corpus))  # cached per root
    assert wn.get_version() == "3.0"
    assert wn.synsets("dog")
    assert wn.synsets("dog")[0].lexname() == "noun.animal"  # uses the generated lexnames
    assert "automobile" in {lemma.name() for s in wn.synsets("car") for lemma in s.lemmas()}


@needs_debian_wordnet
def test_install_from_debian_source_is_complete(corpus):
    for name in W.CORPUS_FILES:
        assert (corpus / name).stat().st_size == (W.DEBIAN_WORDNET / name).stat().st_size
    assert not any(os.path.islink(corpus / name) for name in os.listdir(corpus))


def _lookups(args):
    """Synonyms of every word, looked up ``rounds`` times in this (forked) process; runs in a worker."""
    words, rounds = args
    wn = W.load_wordnet(_FORK_ROOT[0])
    seen = set()
    for _ in range(rounds):
        for word in words:
            seen.add((word, tuple(sorted(lemma.name() for s in wn.synsets(word) for lemma in s.lemmas()))))
    return sorted(seen)


_FORK_ROOT: list = []


def test_forked_processes_read_their_own_database_files(corpus):
    # A reader loaded and used before a fork (as the trainer does before its loader workers start) must
    # give every child exactly the parent's answers. With inherited file handles the children share one
    # file offset per database file, and concurrent seek+readline pairs parse each other's lines: nltk
    # warned "No WordNet synset found" and crashed, or returned another word's synonyms.
    import multiprocessing

    _FORK_ROOT[:] = [corpus]
    wn = W.load_wordnet(corpus)
    for word in ("run", "quickly", "tall", "dog"):  # opens data.verb, data.adv, data.adj, data.noun
        wn.synsets(word)
    # nltk caches synsets by file offset: words the parent has not looked up make the children read.
    words = ["red", "blue", "green", "small", "large", "bright", "dark", "round", "flat", "old", "new", "car",
             "photo", "picture", "drawing", "shape", "circle", "square", "star", "heart", "moon", "fruit",
             "walk", "jump", "slowly", "happily", "bird", "tree", "river", "stone", "cold", "warm"]
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_lookups, [(words, 3)] * 6)
    expected = _lookups((words, 1))
    for result in results:
        assert result == expected
