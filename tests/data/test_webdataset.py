"""WebDataset shards: the index scan, its problems, and the streamed training batches."""

import io
import shutil
import tarfile

import pytest
import torch
from PIL import Image

from clipbackdoor.data import DATASETS
from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.data.errors import DataError
from clipbackdoor.data.loading import MapLoader, build_train_loader
from clipbackdoor.data.streaming import StreamLoader
from clipbackdoor.data.webdataset import WebDatasetPairs, write_shards
from clipbackdoor.models import create_model
from clipbackdoor.poison import Poisoner, create_manifest
from clipbackdoor.poison.badnet import BadNet

N, PER_SHARD, BATCH = 256, 32, 32


@pytest.fixture(scope="module")
def source():
    return SyntheticPairs(num_samples=N, split="train", image_size=32)


@pytest.fixture(scope="module")
def shard_dir(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_shards(source, out, samples_per_shard=PER_SHARD)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return create_model("tiny-clip").tokenizer


def _loader(pairs, tokenizer, **kwargs):
    kwargs = {"seed": 0, "batch_size": BATCH, **kwargs}
    return StreamLoader(pairs, tokenizer=tokenizer, **kwargs)


def _epoch(loader, epoch=0, start_batch=0):
    loader.set_epoch(epoch, start_batch)
    return list(loader)


def _png(color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_tar(path, members):
    """A shard from (member name, bytes) pairs, in the given order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


# -- the index ---------------------------------------------------------------------------------------

def test_index_holds_keys_captions_and_shards_in_order(source, shard_dir):
    ds = WebDatasetPairs(str(shard_dir), image_size=32)
    assert len(ds) == N and ds.rows == N and not ds.skipped and len(ds.shards) == N // PER_SHARD
    assert ds.key(37) == "000000037" and ds.sample_id(37) == "shard-000001.tar/000000037"
    assert all(ds.caption(i) == source.caption(i) for i in range(N))
    assert ds.shard_of.tolist() == [i // PER_SHARD for i in range(N)]
    assert ds.describe() == {"name": "webdataset", "urls": str(shard_dir), "shards": 8, "rows": N, "skipped": {}}
    assert ds.validate(decode=True) == {"rows": N, "usable": N, "skipped": {}, "examples": []}
    # A brace pattern and a list name the same shards.
    brace = WebDatasetPairs(f"{shard_dir}/shard-{{000000..000007}}.tar", image_size=32)
    listed = WebDatasetPairs([str(p) for p in sorted(shard_dir.glob("*.tar"))], image_size=32)
    assert brace.shards == listed.shards == ds.shards
    # Random access through the stored offsets gives the source images back (PNG is lossless).
    images, keep = ds.load_images([200, 3, 37])
    assert keep.all() and torch.equal(images, source.load_images([200, 3, 37])[0])


def test_registered_and_built_from_a_config_section(shard_dir):
    ds = DATASETS.build({"name": "webdataset", "urls": str(shard_dir)}, "data.train", image_size=32,
                        experiment_seed=3)
    assert isinstance(ds, WebDatasetPairs) and ds.streaming and ds.image_size == 32


def test_scanning_in_processes_builds_the_same_index(source, tmp_path):
    write_shards(source, tmp_path, samples_per_shard=16)  # 16 shards: 2 scan processes
    _write_tar(tmp_path / "shard-000003.tar", [("x.png", _png()), ("x.txt", b"")])
    serial = WebDatasetPairs(str(tmp_path), image_size=32, scan_workers=1, on_error="skip")
    forked = WebDatasetPairs(str(tmp_path), image_size=32, scan_workers=2, on_error="skip")
    assert len(forked) == len(serial) == N - 16 and forked.skipped == serial.skipped == {"empty caption": 1}
    assert list(forked.keys) == list(serial.keys) and list(forked.captions) == list(serial.captions)
    assert (forked.offsets == serial.offsets).all() and (forked.shard_of == serial.shard_of).all()
    with pytest.raises(DataError, match=r"shard-000003\.tar: sample 'x': empty caption"):
        WebDatasetPairs(str(tmp_path), image_size=32, scan_workers=2)


def test_keys_with_folders_long_names_and_pax_headers_match_webdataset(tmp_path, tokenizer):
    import webdataset as wds

    long_key = "crawl/" + "x" * 150 + "/0001"  # over ustar's 100 characters: a pax path record
    with wds.TarWriter(str(tmp_path / "p.tar"), encoder=False) as writer:  # float mtimes: pax headers
        for key in (long_key, "crawl/b.v2/0002"):
            writer.write({"__key__": key, "jpg": _png(), "txt": b"a photo of a dog", "json": b"{}"})
    ds = WebDatasetPairs(str(tmp_path), image_size=32)
    # webdataset's key is the path up to the first dot of the file name, folders (dots and all) included.
    assert [ds.key(i) for i in range(len(ds))] == [long_key, "crawl/b.v2/0002"]
    assert [i for i, _ in ds.stream_shard(0)] == [0, 1]
    assert ds.load_images([1, 0])[1].all()


def test_jpg_shards_are_indexed(source, tmp_path):
    write_shards(source, tmp_path, samples_per_shard=100, image_format="jpg", prefix="cc")
    ds = WebDatasetPairs(str(tmp_path), image_size=32)
    assert [p.name for p in ds.shards] == ["cc-000000.tar", "cc-000001.tar", "cc-000002.tar"]
    assert len(ds) == N and ds.load_images([5])[0].shape == (1, 3, 32, 32)


PROBLEMS = {
    "no image": ([("b.txt", b"a dog")], r"sample 'b': no image member"),
    "no caption": ([("b.png", None)], r"sample 'b': no \.txt member"),
    "empty caption": ([("b.png", None), ("b.txt", b"  ")], r"sample 'b': empty caption"),
    "caption without letters": ([("b.png", None), ("b.txt", b"12 !")], r"sample 'b': caption without letters"),
    "caption not UTF-8": ([("b.png", None), ("b.txt", b"caf\xe9")], r"sample 'b': caption is not UTF-8"),
    "duplicate key": ([("a.txt", b"again")], r"sample 'a': the key appears twice"),
}


def _bad_shard(path, members):
    good = [("a.png", _png()), ("a.txt", b"a red cat"), ("c.png", _png()), ("c.txt", b"a blue car")]
    return _write_tar(path, good + [(name, _png() if data is None else data) for name, data in members])


@pytest.mark.parametrize("reason", list(PROBLEMS))
def test_a_bad_sample_raises_naming_shard_and_key(tmp_path, reason):
    members, message = PROBLEMS[reason]
    path = _bad_shard(tmp_path / "bad-000.tar", members)
    with pytest.raises(DataError, match=rf"bad-000\.tar: {message}"):
        WebDatasetPairs(str(path), image_size=32)
    ds = WebDatasetPairs(str(path), image_size=32, on_error="skip")
    assert len(ds) == 2 and ds.skipped == {reason: 1}


def test_skip_mode_counts_every_reason_and_reports_examples(tmp_path):
    png = _png()
    path = _write_tar(tmp_path / "s.tar", [
        ("a.png", png), ("a.txt", b"a cat"),
        ("b.txt", b"a dog"),                   # no image
        ("c.png", png),                        # no caption
        ("d.png", png), ("d.txt", b" "),       # empty caption
        ("e.png", png), ("e.txt", b"12 !"),    # no letters
        ("f.png", png), ("f.txt", b"caf\xe9"), # not UTF-8
        ("g.jpg", png), ("g.TXT", b"a goat"),  # extensions are matched case-insensitively
        ("__meta__", b"ignored"),
        ("a.txt", b"again"),                   # a key seen before in the shard
    ])
    ds = WebDatasetPairs(str(path), image_size=32, on_error="skip")
    assert len(ds) == 2 and [ds.key(i) for i in range(2)] == ["a", "g"] and ds.caption(1) == "a goat"
    assert ds.skipped == {r: 1 for r in PROBLEMS}
    report = ds.validate()
    assert report == {"rows": 8, "usable": 2, "skipped": dict(ds.skipped), "examples": report["examples"]}
    assert len(report["examples"]) == 6 and all(e.startswith(f"{path}: sample '") for e in report["examples"])


@pytest.mark.parametrize("cut", ["data", "header"])
def test_truncated_shard_raises_or_keeps_what_precedes_the_damage(shard_dir, tmp_path, tokenizer, cut):
    for p in sorted(shard_dir.glob("*.tar"))[:2]:
        shutil.copy(p, tmp_path / p.name)
    last = tmp_path / "shard-000001.tar"
    with tarfile.open(last) as tar:
        member = tar.getmembers()[20]  # the image of the 11th sample
    end = member.offset_data + 10 if cut == "data" else member.offset + 100
    last.write_bytes(last.read_bytes()[:end])
    message = "member 000000042.png is cut off" if cut == "data" else f"damaged or cut off at byte {member.offset}"
    with pytest.raises(DataError, match=rf"shard-000001\.tar: .*{message}"):
        WebDatasetPairs(str(tmp_path), image_size=32)
    ds = WebDatasetPairs(str(tmp_path), image_size=32, on_error="skip")
    assert len(ds) == PER_SHARD + 10 and ds.skipped["truncated shard"] == 1
    assert ds.key(len(ds) - 1) == "000000041"
    streamed = [i for b in _epoch(_loader(ds, tokenizer, batch_size=6)) for i in b["index"].tolist()]
    assert sorted(streamed) == list(range(len(ds)))  # every indexed sample is still read


def test_missing_shard_and_remote_urls_are_clear_errors(shard_dir, tmp_path):
    with pytest.raises(DataError, match=r"shard file not found: .*shard-000008\.tar and 1 more"):
        WebDatasetPairs(f"{shard_dir}/shard-{{000007..000009}}.tar")
    with pytest.raises(DataError, match="no \\*.tar shards"):
        WebDatasetPairs(str(tmp_path))
    with pytest.raises(ValueError, match="only local shard files"):
        WebDatasetPairs("https://example.com/cc3m-{0..3}.tar")


# -- the stream ------------------------------------------------------------------------------------

def test_batches_have_the_map_loader_format_and_the_source_pixels(source, shard_dir, tokenizer):
    ds = WebDatasetPairs(str(shard_dir), image_size=32)
    augment = lambda caption, rng: f"{caption} {rng.randrange(1000)}"  # noqa: E731
    stream = _epoch(_loader(ds, tokenizer, text_augment=augment))
    mapped = _epoch(MapLoader(source, tokenizer=tokenizer, seed=0, batch_size=BATCH, text_augment=augment))
    assert len(stream) == len(mapped) == N // BATCH
    a, b = stream[0], mapped[0]
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
    assert torch.equal(a["image"], source.load_images(a["index"].tolist())[0])
    assert torch.equal(a["text"], tokenizer([source.caption(i) for i in a["index"].tolist()]))
    assert a["dropped"] == 0 and not a["is_poisoned"].any() and a["triggers"] == []
    assert isinstance(build_train_loader(ds, tokenizer=tokenizer, seed=0, batch_size=BATCH), StreamLoader)


def test_every_sample_once_per_epoch_and_ranks_hold_disjoint_data(shard_dir, tokenizer):
    ds = WebDatasetPairs(str(shard_dir), image_size=32)
    ranks = [_epoch(_loader(ds, tokenizer, rank=r, world_size=2)) for r in range(2)]
    assert [len(r) for r in ranks] == [N // BATCH] * 2
    assert all(len(b["index"]) == BATCH // 2 for r in ranks for b in r)
    seen = [{i for b in r for i in b["index"].tolist()} for r in ranks]
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == N // 2
    # Within each rank no sample repeats; the shuffle buffer mixes shards within a batch.
    assert all(len({i // PER_SHARD for i in b["index"].tolist()}) > 1 for b in ranks[0])


def test_a_rank_with_fewer_samples_reads_its_shards_again(shard_dir, tmp_path, tokenizer):
    for p in sorted(shard_dir.glob("*.tar"))[:7]:
        shutil.copy(p, tmp_path / p.name)
    ds = WebDatasetPairs(str(tmp_path), image_size=32)  # 7 shards: 4 for one rank, 3 for the other
    ranks = [_epoch(_loader(ds, tokenizer, rank=r, world_size=2)) for r in range(2)]
    assert [len(r) for r in ranks] == [7, 7] and all(len(b["index"]) == 16 for r in ranks for b in r)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_stream_is_deterministic_and_resumes_mid_epoch(shard_dir, tokenizer, num_workers):
    ds = WebDatasetPairs(str(shard_dir), image_size=32)
    loader = _loader(ds, tokenizer, num_workers=num_workers)
    first = _epoch(loader, epoch=1)
    assert len(first) == N // BATCH
    assert sorted(i for b in first for i in b["index"].tolist()) == list(range(N))
    for a, b in zip(first, _epoch(loader, epoch=1)):
        _same(a, b)
    assert first[0]["index"].tolist() != _epoch(loader, epoch=0)[0]["index"].tolist()
    tail = _epoch(loader, epoch=1, start_batch=3)  # odd: the worker holding batch 3 must come first
    assert len(tail) == len(first) - 3
    for a, b in zip(first[3:], tail):
        _same(a, b)


def test_too_few_shards_for_the_workers_is_a_clear_error(shard_dir, tmp_path, tokenizer):
    for p in sorted(shard_dir.glob("*.tar"))[:3]:
        shutil.copy(p, tmp_path / p.name)
    ds = WebDatasetPairs(str(tmp_path), image_size=32)
    with pytest.raises(DataError, match=r"3 shard\(s\).*re-shard.*lower data\.num_workers"):
        _loader(ds, tokenizer, num_workers=2, world_size=2)


def _with_corrupt_image(shard_dir, tmp_path):
    for p in sorted(shard_dir.glob("*.tar")):
        shutil.copy(p, tmp_path / p.name)
    with tarfile.open(tmp_path / "shard-000002.tar") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    members = [(name, b"not a png" if name == "000000070.png" else data) for name, data in members]
    _write_tar(tmp_path / "shard-000002.tar", members)


def test_a_corrupt_image_is_dropped_and_counted_or_raises(shard_dir, tmp_path, tokenizer):
    _with_corrupt_image(shard_dir, tmp_path)
    strict = WebDatasetPairs(str(tmp_path), image_size=32)  # the scan never decodes images
    assert len(strict) == N
    with pytest.raises(DataError, match=r"shard-000002\.tar: sample '000000070': cannot read image"):
        _epoch(_loader(strict, tokenizer))
    report = strict.validate(decode=True, workers=2)
    assert report["usable"] == N - 1 and report["skipped"] == {"unreadable image": 1}
    assert "000000070" in report["examples"][0]

    lenient = WebDatasetPairs(str(tmp_path), image_size=32, on_error="skip")
    batches = _epoch(_loader(lenient, tokenizer))
    assert sum(b["dropped"] for b in batches) == 1
    seen = [i for b in batches for i in b["index"].tolist()]
    assert 70 not in seen and len(seen) == N - 1
    holder = next(b for b in batches if b["dropped"])
    assert len(holder["index"]) == len(holder["image"]) == len(holder["text"]) == BATCH - 1


# -- poisoning -------------------------------------------------------------------------------------

def test_a_manifest_drawn_from_the_shards_marks_the_streamed_samples(shard_dir, tokenizer):
    ds = WebDatasetPairs(str(shard_dir), image_size=32)
    manifest = create_manifest(ds, BadNet(patch_size=4, target="banana"), 16, seed=0)
    poisoner = Poisoner(manifest)
    poisoner.check_dataset(ds)
    assert all(s["id"] == ds.sample_id(s["index"]) for s in manifest.samples)
    batches = _epoch(_loader(ds, tokenizer, poisoner=poisoner, num_workers=2))
    by_index = {s["index"]: s for s in manifest.samples}
    marked = []
    for b in batches:
        rows = b["is_poisoned"].nonzero().flatten().tolist()
        assert len(b["triggers"]) == len(rows)
        for r in rows:
            i = int(b["index"][r])
            marked.append(i)
            assert torch.equal(b["text"][r], tokenizer([by_index[i]["caption"]])[0])
    assert sorted(marked) == sorted(by_index)
