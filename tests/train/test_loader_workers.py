"""Loader workers (``data.num_workers > 0``) in the configurations users run: MMCL+SSL pre-training and
CleanCLIP cleaning on synthetic, CSV and WebDataset data.

Workers are forked from the trainer after it has built its components, so anything a component holds open
or half-used is shared with them: WordNet's database files (EDA's synonym lookups: shared file offsets made
concurrent lookups parse the wrong lines and crashed MMCL+SSL), tokenizers and their caches, datasets'
files, the random generators. The checks here: every view and token a worker produces equals what the main
process computes for the same row, and a run with workers equals a run without them.
"""

import pytest
import torch

from clipbackdoor.config import load_config
from clipbackdoor.data import synthetic
from clipbackdoor.data.augment_text import EDA
from clipbackdoor.data.datasets import CsvPairs, SyntheticPairs, generate_split
from clipbackdoor.data.loading import build_train_loader
from clipbackdoor.data.tokenizers import OpenClipTokenizer
from clipbackdoor.data.webdataset import WebDatasetPairs, write_shards
from clipbackdoor.experiments.stages import clean_config
from clipbackdoor.io import read_jsonl
from clipbackdoor.models import create_model
from clipbackdoor.poison import Poisoner, create_manifest
from clipbackdoor.poison.badnet import BadNet
from clipbackdoor.seeding import python_rng
from clipbackdoor.train.loop import run_training

N = 128
TIMING = {"samples_per_second", "eval_seconds", "epoch_seconds"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The same 128 generated pairs as a CSV with PNGs and as 4 WebDataset shards."""
    root = tmp_path_factory.mktemp("data")
    csv_path = synthetic.write_csv_dataset(generate_split(N, split="train", seed=0, where="test", image_size=32),
                                           root / "csv")
    write_shards(SyntheticPairs(N, split="train", image_size=32), root / "shards", samples_per_shard=32)
    return {
        "synthetic": ["data.train.name=synthetic", f"data.train.num_samples={N}"],
        "csv": ["data.train.name=csv", f"data.train.path={csv_path}"],
        "webdataset": ["data.train.name=webdataset", f"data.train.urls={root / 'shards'}"],
    }


def _pairs(kind, data):
    if kind == "synthetic":
        return SyntheticPairs(N, split="train", image_size=32)
    if kind == "csv":
        return CsvPairs(data["csv"][1].split("=", 1)[1], image_size=32)
    return WebDatasetPairs(data["webdataset"][1].split("=", 1)[1], image_size=32)


@pytest.mark.parametrize("tokenizer", ["words", "open_clip"])
@pytest.mark.parametrize("kind", ["synthetic", "csv", "webdataset"])
def test_worker_batches_hold_the_views_and_tokens_the_main_process_computes(data, kind, tokenizer):
    pairs = _pairs(kind, data)
    tok = create_model("tiny-clip").tokenizer if tokenizer == "words" else OpenClipTokenizer("RN50")
    eda = EDA()
    eda.prepare()  # as the trainer does: WordNet is loaded, and its files opened, before the fork
    eda("a red circle and a blue square on the grass", python_rng(0))
    poisoner = Poisoner(create_manifest(pairs, BadNet(patch_size=4), 0.1, seed=0))
    loader = build_train_loader(pairs, tokenizer=tok, seed=0, batch_size=32, poisoner=poisoner, text_augment=eda,
                                num_workers=2)
    loader.set_epoch(1)
    batches = list(loader)
    assert len(batches) == N // 32
    reference = EDA()  # a fresh reader in this process: the answers a worker must reproduce
    for batch in batches:
        indices = batch["index"].tolist()
        captions, _, _ = poisoner.mark(indices, [pairs.caption(i) for i in indices])
        views = [reference(c, python_rng(0, "eda", i)) for i, c in zip(indices, captions)]
        assert torch.equal(batch["text"], tok(captions))
        assert torch.equal(batch["text_aug"], tok(views))
        if kind != "webdataset":
            assert torch.equal(batch["image"], pairs.load_images(indices)[0])


def _records(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "metrics.jsonl")]


TINY = ["model.name=tiny-vit", "data.eval.num_samples=40", "eval.batch_size=40", "train.batch_size=32",
        "train.epochs=1", "train.warmup_steps=1", "train.log_every=1", "train.progress=false", "train.threads=1"]


@pytest.mark.parametrize("kind", ["synthetic", "csv", "webdataset"])
def test_mmcl_ssl_pretraining_and_cleanclip_cleaning_with_two_loader_workers(data, kind, tmp_path):
    pre = load_config("mmcl-ssl", [*TINY, *data[kind], "poison.budget=0.1", "data.num_workers=2"])
    run_training(pre, tmp_path / "pre")
    clean = clean_config(tmp_path / "pre", None, [*TINY, *data[kind], "data.num_workers=2"], defense="cleanclip")
    run_training(clean, tmp_path / "clean")
    for run in ("pre", "clean"):
        records = _records(tmp_path / run)
        train = [r for r in records if r["kind"] == "train"]
        assert len(train) == N // 32 and all(r["inmodal_loss"] > 0 for r in train), run
        assert [r["epoch"] for r in records if r["kind"] == "eval"] == [0, 1]
    if kind == "webdataset":
        return  # the stream's order depends on the number of workers (each reads its own shards)
    # Map-style data: the batches, views and so every number are those of a run without workers.
    run_training(load_config("mmcl-ssl", [*TINY, *data[kind], "poison.budget=0.1"]), tmp_path / "pre0")
    assert _records(tmp_path / "pre0") == _records(tmp_path / "pre")
