"""Tests of the synthetic web-crawl generator (clipbackdoor.data.synthetic)."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipbackdoor.data import synthetic
from clipbackdoor.data.synthetic import (
    CLASSNAMES,
    TARGET_CLASS,
    TEMPLATES,
    VOCABULARY,
    SyntheticData,
    generate,
    write_csv_dataset,
)

_WORD = re.compile(r"[a-z]+")


def _same(a: SyntheticData, b: SyntheticData) -> bool:
    return torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.captions == b.captions


def _mentions(caption: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", caption) is not None


def _mentioned_classes(caption: str) -> set[int]:
    return {k for k, syns in enumerate(synthetic._SHAPE_SYNONYMS) if any(_mentions(caption, s) for s in syns)}


@pytest.fixture(scope="module")
def big() -> SyntheticData:
    return generate(5000, seed=123)


# --- determinism ------------------------------------------------------------------------------------------


def test_same_seed_is_bit_identical_regardless_of_global_rng_and_threads():
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(0)
        torch.set_num_threads(1)
        a = generate(300, seed=7)
        torch.manual_seed(999)
        torch.rand(1000)  # move the global stream: the generator must not read it
        torch.set_num_threads(2)
        b = generate(300, seed=7)
    finally:
        torch.set_num_threads(threads)
    assert _same(a, b)


def test_different_seeds_differ():
    a, b = generate(64, seed=1), generate(64, seed=2)
    assert not torch.equal(a.images, b.images)
    assert not torch.equal(a.labels, b.labels)
    assert a.captions != b.captions


def test_chunk_size_does_not_change_the_output_and_smaller_sets_are_prefixes():
    # 300 crosses the 256-sample block boundary, chunk_size=7 splits blocks unevenly.
    ref = generate(300, seed=5)
    assert _same(ref, generate(300, seed=5, chunk_size=7))
    small = generate(260, seed=5, chunk_size=4096)
    assert torch.equal(small.images, ref.images[:260])
    assert torch.equal(small.labels, ref.labels[:260])
    assert small.captions == ref.captions[:260]


def test_difficulty_changes_degradation_only():
    clean, hard = generate(200, seed=3, difficulty=0.0), generate(200, seed=3, difficulty=1.0)
    assert torch.equal(clean.labels, hard.labels) and clean.captions == hard.captions
    diff = (clean.images.float() - hard.images.float()).abs()
    assert diff.mean() > 1.0  # noise and specks were added ...
    assert diff.median() < 20  # ... to the same scenes


# --- shapes, labels, metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 24, 32])
def test_shapes_and_dtypes(size):
    d = generate(37, seed=0, image_size=size)
    assert d.images.shape == (37, 3, size, size) and d.images.dtype == torch.uint8
    assert d.labels.shape == (37,) and d.labels.dtype == torch.int64
    assert len(d.captions) == len(d) == 37 and all(isinstance(c, str) and c for c in d.captions)
    assert int(d.labels.min()) >= 0 and int(d.labels.max()) < len(CLASSNAMES)
    # not blank: every image has contrast (an object on a background)
    assert (d.images.flatten(1).float().std(1) > 5).all()


def test_labels_are_balanced(big):
    counts = torch.bincount(big.labels, minlength=len(CLASSNAMES))
    # stratified per block: much tighter than i.i.d. sampling (std ~21 here)
    assert counts.min() >= 490 and counts.max() <= 510, counts


def test_zero_shot_metadata():
    assert len(CLASSNAMES) == 10 and len(set(CLASSNAMES)) == 10
    assert TARGET_CLASS == "banana" and "banana" in CLASSNAMES
    assert all(name == name.lower() and name[0] not in "aeiou" for name in CLASSNAMES)  # "a {}" grammar
    assert len(TEMPLATES) >= 6 and all(t.count("{}") == 1 for t in TEMPLATES)
    for k, syns in enumerate(synthetic._SHAPE_SYNONYMS):
        assert syns[0] == CLASSNAMES[k]  # zero-shot class names are caption words


def test_vocabulary_covers_captions_templates_and_classnames(big):
    assert list(VOCABULARY) == sorted(set(VOCABULARY))
    assert all(re.fullmatch(r"[a-z]+", w) for w in VOCABULARY)
    words = {w for c in big.captions for w in _WORD.findall(c)}
    assert words <= set(VOCABULARY), words - set(VOCABULARY)
    prompts = [t.format(c) for t in TEMPLATES for c in CLASSNAMES]
    assert {w for p in prompts for w in _WORD.findall(p)} <= set(VOCABULARY)
    # captions: letters, spaces and basic punctuation only (numbers are written as words)
    assert all(re.fullmatch(r"[a-z][a-z ,.]*", c) for c in big.captions)
    assert not any("  " in c or " ," in c or c.endswith(" ") for c in big.captions)


def test_captions_are_varied_and_prompt_like(big):
    assert len(set(big.captions)) > 0.5 * len(big.captions)
    assert any(c.startswith("a photo of a ") for c in big.captions)
    assert any(re.search(r"\ban [aeiou]", c) for c in big.captions)  # article fixed before vowels
    assert not any(re.search(r"\ba [aeiou]", c) for c in big.captions)
    # the canonical class name is used in captions of its class, so zero-shot prompts are grounded
    for k, name in enumerate(CLASSNAMES):
        own = [c for c, y in zip(big.captions, big.labels.tolist()) if y == k]
        assert sum(_mentions(c, name) for c in own) > 0.3 * len(own)


def test_caption_noise_fraction_and_label_consistency(big):
    mentioned = [_mentioned_classes(c) for c in big.captions]
    silent = sum(not m for m in mentioned) / len(big.captions)
    assert 0.08 <= silent <= 0.12  # caption_noise=0.1, binomial std ~0.004
    # captions that mention a shape mention exactly the right one
    assert all(m == {y} for m, y in zip(mentioned, big.labels.tolist()) if m)


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_caption_noise_extremes(noise):
    d = generate(400, seed=9, caption_noise=noise)
    mentioned = [bool(_mentioned_classes(c)) for c in d.captions]
    assert all(mentioned) if noise == 0.0 else not any(mentioned)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 2.5}, "num_samples"),
        ({"image_size": 7}, "image_size"),
        ({"difficulty": -0.1}, "difficulty"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"difficulty": float("nan")}, "difficulty"),
        ({"caption_noise": 1.01}, "caption_noise"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"seed": "1"}, "seed"),
    ],
)
def test_argument_validation(kwargs, name):
    args = {"num_samples": 4, "seed": 0} | kwargs
    num_samples = args.pop("num_samples")
    with pytest.raises(ValueError, match=name):
        generate(num_samples, **args)


def test_accepts_numpy_integers():
    assert _same(generate(np.int64(5), seed=np.int64(3)), generate(5, seed=3))


# --- CSV export ------------------------------------------------------------------------------------------


def test_write_csv_dataset_round_trip(tmp_path):
    d = generate(12, seed=4, image_size=16)
    d.captions[0] = 'a caption, with "quotes", commas\nand a newline'  # must survive CSV quoting
    path = write_csv_dataset(d, tmp_path / "out", csv_name="train.csv", image_dir="img")
    assert path == tmp_path / "out" / "train.csv"
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:2] == ["image", "caption"] and "label" in reader.fieldnames
    assert len(rows) == 12
    for i, row in enumerate(rows):
        assert row["caption"] == d.captions[i]
        assert row["label"] == CLASSNAMES[int(d.labels[i])]
        assert not row["image"].startswith("/") and row["image"].startswith("img/")
        pixels = np.asarray(Image.open(path.parent / row["image"]).convert("RGB"))
        assert np.array_equal(pixels, d.images[i].permute(1, 2, 0).numpy())


# --- the images carry the label --------------------------------------------------------------------------


def _edge_features(images: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Translation-invariant random features: random filters on the gradient magnitude, global pooled."""
    x = images.float() / 255
    gx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    gy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    edges = (gx * gx + gy * gy).sum(1, keepdim=True).sqrt()  # colour-agnostic outline
    h = F.conv2d(edges, filters)
    return torch.cat([h.amax((2, 3)), F.relu(h).mean((2, 3))], 1)


def test_classes_are_visually_distinguishable():
    # A ridge-regression probe on random edge features (no training loop: a couple of seconds) must beat
    # chance (10 %) by far on held-out clean images. It fails if labels and images are misaligned, if shapes
    # look alike or are not drawn. (It reaches ~45 %; a trained CNN gets much higher.)
    train, test = generate(2000, seed=11, difficulty=0.0), generate(500, seed=12, difficulty=0.0)
    g = torch.Generator().manual_seed(0)
    filters = torch.randn(128, 1, 5, 5, generator=g)
    filters -= filters.mean((1, 2, 3), keepdim=True)
    f_train, f_test = _edge_features(train.images, filters), _edge_features(test.images, filters)
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_test = (f_train - mu) / sd, (f_test - mu) / sd
    targets = F.one_hot(train.labels, len(CLASSNAMES)).double()
    a = f_train.double()
    w = torch.linalg.solve(a.T @ a + 10 * torch.eye(a.shape[1], dtype=torch.float64), a.T @ targets)
    accuracy = ((f_test.double() @ w).argmax(1) == test.labels).double().mean().item()
    assert accuracy > 0.3, accuracy
