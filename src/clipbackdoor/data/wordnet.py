"""WordNet 3.0 for EDA's synonym lookups, from Debian's packages instead of ``nltk.download``.

nltk's ``WordNetCorpusReader`` needs a folder with the WordNet database (``data.*``, ``index.*``,
``*.exc``, ``cntlist.rev``), ``index.sense`` and ``lexnames``. Debian ships the database in
``wordnet-base`` and ``index.sense`` in ``wordnet-sense-index`` (both under ``/usr/share/wordnet``), but
not ``lexnames``, the table of the 45 lexicographer files; this module writes it from ``lexnames(5WN)``.

The files are *copied*, not linked: nltk >= 3.9.3 refuses corpus files that are symlinks resolving
outside the corpus root, hard links, and files owned by another account.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
import weakref
import zipfile
from collections.abc import Sequence
from pathlib import Path

from clipbackdoor.errors import SetupError

DEBIAN_WORDNET = Path("/usr/share/wordnet")

INSTALL_HINT = (
    "install it with `apt-get install wordnet-base wordnet-sense-index`, "
    "then run `clipbackdoor setup-wordnet`"
)

#: The 45 lexicographer files of WordNet 3.0 (``lexnames(5WN)``): number, name, syntactic category
#: (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES: tuple[tuple[int, str, int], ...] = (
    (0, "adj.all", 3), (1, "adj.pert", 3), (2, "adv.all", 4), (3, "noun.Tops", 1),
    (4, "noun.act", 1), (5, "noun.animal", 1), (6, "noun.artifact", 1), (7, "noun.attribute", 1),
    (8, "noun.body", 1), (9, "noun.cognition", 1), (10, "noun.communication", 1), (11, "noun.event", 1),
    (12, "noun.feeling", 1), (13, "noun.food", 1), (14, "noun.group", 1), (15, "noun.location", 1),
    (16, "noun.motive", 1), (17, "noun.object", 1), (18, "noun.person", 1), (19, "noun.phenomenon", 1),
    (20, "noun.plant", 1), (21, "noun.possession", 1), (22, "noun.process", 1), (23, "noun.quantity", 1),
    (24, "noun.relation", 1), (25, "noun.shape", 1), (26, "noun.state", 1), (27, "noun.substance", 1),
    (28, "noun.time", 1), (29, "verb.body", 2), (30, "verb.change", 2), (31, "verb.cognition", 2),
    (32, "verb.communication", 2), (33, "verb.competition", 2), (34, "verb.consumption", 2),
    (35, "verb.contact", 2), (36, "verb.creation", 2), (37, "verb.emotion", 2), (38, "verb.motion", 2),
    (39, "verb.perception", 2), (40, "verb.possession", 2), (41, "verb.social", 2), (42, "verb.stative", 2),
    (43, "verb.weather", 2), (44, "adj.ppl", 3),
)  # fmt: skip

#: Database files nltk's reader opens, all of which the source must provide (``lexnames`` is generated).
CORPUS_FILES: tuple[str, ...] = (
    "cntlist.rev", "index.sense",
    "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)  # fmt: skip


class WordNetNotFound(SetupError):
    """No usable WordNet corpus; the message says how to install one."""


def lexnames_text() -> str:
    """The ``lexnames`` file: one ``NN<TAB>name<TAB>category`` line per lexicographer file."""
    return "".join(f"{num:02d}\t{name}\t{cat}\n" for num, name, cat in LEXNAMES)


def _copy_if_changed(src: Path, dst: Path) -> None:
    # Earlier or hand-made corpora may hold symlinks or hard links, which nltk refuses: replace them.
    if dst.is_file() and not dst.is_symlink():
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and int(s.st_mtime) == int(d.st_mtime) and d.st_nlink == 1:
            return
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    shutil.copystat(src, tmp)
    # nltk refuses group- or world-writable corpus files.
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)


def install_wordnet(dest: str | Path, source: str | Path = DEBIAN_WORDNET) -> Path:
    """Create ``dest/corpora/wordnet/``: copies of a WordNet 3.0 database plus a generated ``lexnames``.

    Idempotent: files already copied (same size and modification time) are kept. Copies, not symlinks,
    because nltk >= 3.9.3 refuses to read corpus files that resolve outside the corpus folder.

    Args:
        dest: an nltk data directory, e.g. ``~/nltk_data``.
        source: folder with the database files (Debian: ``/usr/share/wordnet``).

    Returns:
        The corpus directory ``dest/corpora/wordnet``.

    Raises:
        WordNetNotFound: ``source`` lacks one of ``CORPUS_FILES``.
    """
    source = Path(source)
    if not source.is_dir():
        raise WordNetNotFound(f"no WordNet database: {source} does not exist; {INSTALL_HINT}")
    missing = [name for name in CORPUS_FILES if not (source / name).is_file()]
    if missing:
        lacking = ", ".join(missing)
        raise WordNetNotFound(f"incomplete WordNet database in {source} (no {lacking}); {INSTALL_HINT}")
    corpus = Path(dest).expanduser() / "corpora" / "wordnet"
    corpus.mkdir(parents=True, exist_ok=True)
    os.chmod(corpus, 0o755)  # nltk also refuses a corpus folder that others can write to (umask 002)
    for name in CORPUS_FILES:
        _copy_if_changed(source / name, corpus / name)
    lexnames = corpus / "lexnames"
    if lexnames.is_symlink() or not lexnames.is_file() or lexnames.read_text() != lexnames_text():
        lexnames.unlink(missing_ok=True)
        lexnames.write_text(lexnames_text())
        os.chmod(lexnames, 0o644)
    return corpus


def _usable(path: Path) -> bool:
    """A corpus folder with every file nltk opens, or a zip laid out like nltk's ``wordnet.zip``."""
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (OSError, zipfile.BadZipFile):
            return False
        return all(f"wordnet/{name}" in names for name in (*CORPUS_FILES, "lexnames"))
    # Symlinked files do not count: current nltk refuses to open them (install_wordnet copies instead).
    return all(
        (path / name).is_file() and not (path / name).is_symlink() for name in (*CORPUS_FILES, "lexnames")
    )


def find_wordnet(search: Sequence[str | Path] | None = None) -> Path:
    """The first usable WordNet corpus.

    Looks at each explicit ``search`` path (a corpus folder, or a data dir holding ``corpora/wordnet``),
    then at every ``nltk.data.path`` entry (``<entry>/corpora/wordnet`` and nltk's own
    ``<entry>/corpora/wordnet.zip``). ``nltk.data.path`` already contains the ``NLTK_DATA`` entries.

    Raises:
        WordNetNotFound: with the list of places searched and the install command.
    """
    import nltk

    candidates: list[Path] = []
    for entry in search or ():
        entry = Path(entry).expanduser()
        candidates += [entry, entry / "corpora" / "wordnet"]
    for entry in nltk.data.path:
        if isinstance(entry, (str, os.PathLike)):
            base = Path(entry).expanduser() / "corpora"
            candidates += [base / "wordnet", base / "wordnet.zip"]
    for candidate in candidates:
        if _usable(candidate):
            return candidate
    searched = ", ".join(str(c) for c in candidates) or "(nothing)"
    raise WordNetNotFound(f"no WordNet corpus found (searched: {searched}); {INSTALL_HINT}")


def _authorize(path: Path) -> None:
    # nltk >= 3.9.3 only opens corpora below an nltk.data.path entry (or a private temp dir). A root the
    # caller names explicitly is trusted, so it is added the way nltk's own error message advises.
    import nltk

    roots = [Path(p).expanduser().resolve() for p in nltk.data.path if isinstance(p, (str, os.PathLike))]
    if not any(path == root or path.is_relative_to(root) for root in roots):
        nltk.data.path.append(str(path))


#: Every reader ``_load`` made in this process; a forked child must not use their open files (see below).
_READERS: weakref.WeakSet = weakref.WeakSet()


def _forget_open_files_after_fork() -> None:
    # nltk's reader keeps the database files open and reads a synset with seek() then readline(). A
    # forked process (a DataLoader worker) inherits those descriptors, and with them one shared file
    # offset per file: two workers looking up synsets at once move each other's offset and parse the
    # wrong lines ("No WordNet synset found ...", then a crash, or worse, wrong synonyms). The child drops
    # the inherited handles; the reader reopens each file, privately, on its next lookup.
    for reader in list(_READERS):
        reader.forget_open_files()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_open_files_after_fork)


@functools.lru_cache(maxsize=None)
def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30Reader(WordNetCorpusReader):
        """nltk's reader minus its start-up map from nltk's "wordnet" package onto this corpus, and safe
        to use in forked processes.

        That map (``map30``) is only used by the Open Multilingual WordNet functions, which are off here
        (``omw_reader=None``). Computing it reads ``index.sense`` twice, more than half of the start-up
        time, and fails unless nltk can also find a corpus named "wordnet" on its own data path.
        """

        def map_wn(self, version: str = "wordnet"):
            return None

        def forget_open_files(self) -> None:
            """Drop the lazily opened database files, so that this process opens its own on its next
            lookup. (Collecting the old file objects closes this process's copies of the descriptors
            only; the parent's stay open.)"""
            self._data_file_map = {}
            self._key_count_file = None
            self._key_synset_file = None

    return WordNet30Reader


@functools.lru_cache(maxsize=None)
def _load(root: Path):
    reader = _reader_class()
    if root.suffix == ".zip":
        from nltk.data import ZipFilePathPointer

        _authorize(root.parent)
        pointer = ZipFilePathPointer(str(root), "wordnet/")
    else:
        _authorize(root)
        pointer = str(root)
    with warnings.catch_warnings():
        # "The multilingual functions are not available with this Wordnet version": expected, no OMW.
        warnings.filterwarnings("ignore", message="The multilingual functions", category=UserWarning)
        loaded = reader(pointer, None)
    _READERS.add(loaded)
    return loaded


def load_wordnet(root: str | Path | None = None):
    """An nltk ``WordNetCorpusReader`` (subclass) for a corpus folder; cached per resolved root.

    Args:
        root: the corpus folder (holding ``data.noun``, ``lexnames``, ...). ``None``: ``find_wordnet()``.

    Raises:
        WordNetNotFound: no corpus at ``root`` (or none found).
    """
    if root is None:
        path = find_wordnet()
    else:
        path = Path(root).expanduser()
        if not _usable(path):
            raise WordNetNotFound(f"{path} is not a WordNet corpus folder; {INSTALL_HINT}")
    return _load(path.resolve())
