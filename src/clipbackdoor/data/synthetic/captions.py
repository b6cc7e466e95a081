"""Captions of the synthetic generator: word lists, templates, caption assembly and the vocabulary.

Also the zero-shot metadata (:data:`CLASSNAMES`, :data:`TEMPLATES`, :data:`TARGET_CLASS`) and the colour
and background tables, whose names appear in captions; the renderer (``shapes.py``) uses the same tables,
so a caption's attributes always describe what the image shows.
"""

from __future__ import annotations

import re

import numpy as np

# --------------------------------------------------------------------------------------------------------
# Word lists. VOCABULARY is derived from these, so adding a word here is all it takes.
# --------------------------------------------------------------------------------------------------------

# Shape id -> caption synonyms. The first synonym is the canonical zero-shot class name. The crescent is
# the paper's "banana": the attack target, so its canonical name must be exactly "banana".
_SHAPE_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("circle", "disc", "dot"),
    ("square", "box", "block"),
    ("triangle", "pyramid", "wedge"),
    ("cross", "plus", "plus sign"),
    ("ring", "donut", "hoop"),
    ("star", "sparkle", "pointy star"),
    ("banana", "crescent", "moon"),
    ("bar", "stick", "strip"),
    ("tee", "letter t", "capital t"),
    ("heart", "love heart", "valentine"),
)
# The canonical name is used half of the time so that zero-shot prompts built from CLASSNAMES are
# well grounded; the synonyms keep the captions diverse (as web alt-texts are).
_SYNONYM_PROBS = (0.5, 0.25, 0.25)

CLASSNAMES: tuple[str, ...] = tuple(s[0] for s in _SHAPE_SYNONYMS)
TARGET_CLASS: str = "banana"
_NUM_CLASSES = len(CLASSNAMES)

# Zero-shot prompt templates (CLIP-style prompt ensembling). All class names start with a consonant, so
# "a {}" is grammatical for every class.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a drawing of a {}.",
    "a {} shape.",
    "a picture of the {}.",
    "an image showing a {}.",
    "a close up of a {}.",
    "a rendering of a {}.",
    "a small {}.",
    "a big {}.",
)

# 12 named object colours (RGB in [0, 1]); the names appear in captions, so they must look like the name.
_COLORS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (0.85, 0.10, 0.10)),
    ("orange", (1.00, 0.55, 0.05)),
    ("yellow", (0.95, 0.90, 0.10)),
    ("green", (0.10, 0.70, 0.20)),
    ("blue", (0.10, 0.30, 0.90)),
    ("purple", (0.55, 0.15, 0.75)),
    ("pink", (1.00, 0.50, 0.75)),
    ("brown", (0.50, 0.30, 0.10)),
    ("black", (0.05, 0.05, 0.05)),
    ("white", (0.97, 0.97, 0.97)),
    ("gray", (0.50, 0.50, 0.50)),
    ("cyan", (0.10, 0.85, 0.90)),
)
_COLOR_NAMES = tuple(c[0] for c in _COLORS)
_NUM_COLORS = len(_COLORS)
_NUM_COLORS = len(_COLORS)

# Background textures; index order is the texture id used by the renderer.
_BG_PLAIN, _BG_STRIPED, _BG_CHECKERED, _BG_GRADIENT, _BG_NOISY, _BG_BLOTCHY = range(6)
_BG_WORDS: tuple[tuple[str, ...], ...] = (
    ("plain", "empty", "blank"),
    ("striped", "stripy", "lined"),
    ("checkered", "checked", "tiled"),
    ("gradient", "fading", "shaded"),
    ("noisy", "grainy", "speckled"),
    ("blotchy", "cloudy", "mottled"),
)
_NUM_BG = len(_BG_WORDS)
_BG_NOUNS = ("background", "pattern", "backdrop", "wall")

# Size words by scale tercile (the scale range is split into three equal bins).
_SIZE_WORDS: tuple[tuple[str, ...], ...] = (
    ("small", "tiny", "little"),
    ("medium", "normal sized", "regular"),
    ("large", "big", "huge"),
)

# Caption templates. Fields: {shape} {color} {size} {bgtype} {bgcolor} {bgnoun}. Optional attributes
# ({color}, {size}) may be left empty; the article "a" is fixed to "an" afterwards. Some templates
# deliberately look like zero-shot prompts ("a photo of a ..."), the rest like alt-texts and tags.
_CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {size} {color} {shape}",
    "a photo of a {size} {color} {shape}.",
    "a {size} {color} {shape}",
    "{color} {shape} over a {bgcolor} {bgtype} {bgnoun}",
    "an image showing a {color} {shape} shape",
    "a picture of the {color} {shape}.",
    "{shape} on a {bgtype} {bgnoun}",
    "a drawing of a {size} {shape}",
    "my {color} {shape} lol",
    "a {color} {shape} in front of a {bgcolor} {bgnoun}",
    "close up of a {color} {shape}",
    "{color} {shape} clipart",
    "the {shape} is {color}",
    "a {size} {shape} on {bgcolor}",
    "cute {color} {shape} sticker",
    "{shape} icon, {color}, {bgtype} {bgnoun}",
    "a {shape} shape.",
    "a rendering of a {size} {color} {shape} on a {bgtype} {bgnoun}",
    "{size} {shape} in {color}",
)

# Captions of the web's useless kind: they never mention the object (the shape synonyms must not occur).
_NOISE_TEMPLATES: tuple[str, ...] = (
    "a {bgcolor} {bgtype} {bgnoun}",
    "cool picture lol",
    "image number {number}",
    "untitled",
    "photo {number}",
    "random stuff i found",
    "wallpaper in {bgcolor}",
    "my favourite {bgtype} {bgnoun}",
    "click here for more",
    "download free {bgtype} {bgnoun}",
    "img {number}, uploaded by user {number2}",
    "a {color} thing",
)

# Templates where the colour is a predicate, not an optional adjective ("the star is" would be broken).
_COLOR_REQUIRED = np.array([t.endswith(("is {color}", "in {color}")) for t in _CAPTION_TEMPLATES])

# Web-ish tags appended to some captions.
_TAGS = ("hd", "stock photo", "free download", "wallpaper", "vector art", "nice", "wow", "pic", "png")
_TAG_PROB = 0.15
_COLOR_PROB = 0.85  # a {color} slot is filled this often
_SIZE_PROB = 0.5  # a {size} slot is filled this often

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    """0..999 in words ("three hundred forty two"): captions contain letters only, never digits."""
    parts = []
    if n >= 100:
        parts += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return " ".join(parts)
    if n < 20:
        parts.append(_ONES[n])
    else:
        parts.append(_TENS[n // 10])
        if n % 10:
            parts.append(_ONES[n % 10])
    return " ".join(parts)


_NUMBERS = tuple(_number_words(n) for n in range(1000))

_WORD_RE = re.compile(r"[a-z]+")


def _vocabulary() -> tuple[str, ...]:
    texts: list[str] = [
        *(w for syn in _SHAPE_SYNONYMS for w in syn),
        *CLASSNAMES,
        *TEMPLATES,
        *_COLOR_NAMES,
        *(w for words in _BG_WORDS for w in words),
        *_BG_NOUNS,
        *(w for words in _SIZE_WORDS for w in words),
        *_CAPTION_TEMPLATES,
        *_NOISE_TEMPLATES,
        *_TAGS,
        *_NUMBERS,
    ]
    # Template field names ({shape}, ...) are placeholders, not words.
    texts = [re.sub(r"\{[a-z0-9]*\}", " ", t) for t in texts]
    return tuple(sorted({w for t in texts for w in _WORD_RE.findall(t)}))


VOCABULARY: tuple[str, ...] = _vocabulary()

# Words that identify a shape. Noise captions, attributes and tags must not contain any of them, otherwise
# a "noise" caption would leak the label (checked at import; cheap).
_SHAPE_WORDS = frozenset(w for syn in _SHAPE_SYNONYMS for s in syn for w in s.split())


def _check_word_lists() -> None:
    leaky = (
        [*_NOISE_TEMPLATES, *_TAGS, *_COLOR_NAMES, *_BG_NOUNS, *_NUMBERS]
        + [w for words in _BG_WORDS for w in words]
        + [w for words in _SIZE_WORDS for w in words]
    )
    for text in leaky:
        bad = _SHAPE_WORDS.intersection(_WORD_RE.findall(re.sub(r"\{[a-z0-9]*\}", " ", text)))
        if bad:  # pragma: no cover - guards edits of the word lists
            raise AssertionError(f"word list entry {text!r} contains shape word(s) {sorted(bad)}")


_check_word_lists()

# Column layout of the per-block caption draws (numpy).
(_K_NOISE, _K_TEMPLATE, _K_SYNONYM, _K_COLOR, _K_SIZE, _K_SIZEWORD, _K_BGWORD, _K_BGNOUN, _K_NOISETEMPLATE,
 _K_NUM1, _K_NUM2, _K_TAG, _K_TAGWORD) = range(13)
_NUM_KCOLS = 13


# --------------------------------------------------------------------------------------------------------
# Caption assembly.
# --------------------------------------------------------------------------------------------------------

_A_BEFORE_VOWEL = re.compile(r"\ba (?=[aeiou])")
_SPACES = re.compile(r" +")
_EDGE_SPACES = re.compile(r"^ | $", re.MULTILINE)
_SPACE_BEFORE_PUNCT = re.compile(r" ([,.])")
_SYNONYM_CDF = np.cumsum(_SYNONYM_PROBS)


def _pick(u: np.ndarray, n: int) -> np.ndarray:
    return np.minimum((u * n).astype(np.int64), n - 1)


def _assemble_captions(
    k: np.ndarray,
    labels: np.ndarray,
    color: np.ndarray,
    bgcolor: np.ndarray,
    bgtype: np.ndarray,
    size_bin: np.ndarray,
    caption_noise: float,
) -> list[str]:
    """Web-like captions of one batch: indices are drawn vectorized, then strings assembled.

    ``k`` holds the batch's caption uniforms (n, _NUM_KCOLS); the other arrays (n,) are what the images
    show (shape id, colour, background colour and texture ids, size tercile), decoded by ``params.py``.
    """
    noisy = k[:, _K_NOISE] < caption_noise
    template = _pick(k[:, _K_TEMPLATE], len(_CAPTION_TEMPLATES))
    synonym = np.searchsorted(_SYNONYM_CDF, k[:, _K_SYNONYM], side="right").clip(max=2)
    has_color = (k[:, _K_COLOR] < _COLOR_PROB) | _COLOR_REQUIRED[template]
    has_size = k[:, _K_SIZE] < _SIZE_PROB
    size_word = _pick(k[:, _K_SIZEWORD], 3)
    bg_word = _pick(k[:, _K_BGWORD], 3)
    bg_noun = _pick(k[:, _K_BGNOUN], len(_BG_NOUNS))
    noise_template = _pick(k[:, _K_NOISETEMPLATE], len(_NOISE_TEMPLATES))
    num1 = _pick(k[:, _K_NUM1], 999) + 1
    num2 = _pick(k[:, _K_NUM2], 999) + 1
    has_tag = k[:, _K_TAG] < _TAG_PROB
    tag = _pick(k[:, _K_TAGWORD], len(_TAGS))

    out = []
    for i in range(len(labels)):
        fields = {
            "shape": _SHAPE_SYNONYMS[labels[i]][synonym[i]],
            "color": _COLOR_NAMES[color[i]] if has_color[i] else "",
            "size": _SIZE_WORDS[size_bin[i]][size_word[i]] if has_size[i] else "",
            "bgtype": _BG_WORDS[bgtype[i]][bg_word[i]],
            "bgcolor": _COLOR_NAMES[bgcolor[i]],
            "bgnoun": _BG_NOUNS[bg_noun[i]],
        }
        if noisy[i]:
            fields["shape"] = ""  # unused by noise templates; emptied to make the guarantee obvious
            fields["color"] = _COLOR_NAMES[color[i]]
            fields["number"] = _NUMBERS[num1[i]]
            fields["number2"] = _NUMBERS[num2[i]]
            text = _NOISE_TEMPLATES[noise_template[i]].format(**fields)
        else:
            text = _CAPTION_TEMPLATES[template[i]].format(**fields)
        if has_tag[i]:
            text = f"{text.removesuffix('.')}, {_TAGS[tag[i]]}"
        out.append(text)
    # Clean-up as a few regex passes over all captions at once (one per caption is ~3x slower): empty
    # optional fields leave runs of spaces and " ," behind, and "a" must become "an" before a vowel.
    text = _SPACES.sub(" ", "\n".join(out))
    text = _EDGE_SPACES.sub("", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text).replace(",,", ",")
    out = _A_BEFORE_VOWEL.sub("an ", text).split("\n")
    return out
