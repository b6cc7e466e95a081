import torch

from clipbackdoor.data.augment_text import EDA
from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.data.loading import MapLoader
from clipbackdoor.data.pipeline import EpochBatchSampler, PairBatches
from clipbackdoor.models import create_model
from clipbackdoor.poison import Poisoner, create_manifest
from clipbackdoor.poison.badnet import BadNet


def _batches(pairs):
    tok = create_model("tiny-clip").tokenizer
    poisoner = Poisoner(create_manifest(pairs, BadNet(patch_size=4), 0.1, seed=0))
    return PairBatches(pairs, tok, seed=0, poisoner=poisoner, text_augment=EDA())


def test_epoch_order_is_a_seeded_permutation_and_resumable():
    s = EpochBatchSampler(100, 32, seed=5)
    first = list(s)
    assert len(first) == 3 and all(len(b) == 32 for b in first)  # the partial batch is dropped
    assert len({i for b in first for i in b}) == 96
    assert list(s) == first
    s.set_epoch(1)
    second = list(s)
    assert second != first
    s.set_epoch(1, start_batch=2)
    assert list(s) == second[2:]


def _loader(pairs, **kw):
    tok = create_model("tiny-clip").tokenizer
    poisoner = Poisoner(create_manifest(pairs, BadNet(patch_size=4), 0.1, seed=0))
    return MapLoader(pairs, tokenizer=tok, seed=0, batch_size=64, poisoner=poisoner, text_augment=EDA(), **kw)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k], k


def test_workers_give_the_same_batches_as_the_main_process():
    pairs = SyntheticPairs(num_samples=192, split="train", image_size=32)
    inline, forked = _loader(pairs), _loader(pairs, num_workers=2)
    for loader in (inline, forked):
        loader.set_epoch(1)
    inline, forked = list(inline), list(forked)
    assert len(inline) == len(forked) == 3
    for a, b in zip(inline, forked):
        _same(a, b)


def test_ranks_slice_the_single_process_global_batches():
    # Two ranks together see exactly the rows of each single-process batch, rank 0 the first half, so the
    # gathered embeddings are in the single process's order; triggers and captions travel with the rows.
    pairs = SyntheticPairs(num_samples=192, split="train", image_size=32)
    single = list(_loader(pairs))
    ranks = [list(_loader(pairs, rank=r, world_size=2)) for r in range(2)]
    assert all(len(r) == len(single) == 3 for r in ranks)
    for b, whole in enumerate(single):
        halves = [r[b] for r in ranks]
        for key in ("index", "image", "text", "text_aug", "is_poisoned"):
            assert torch.equal(torch.cat([h[key] for h in halves]), whole[key]), key
        assert halves[0]["triggers"] + halves[1]["triggers"] == whole["triggers"]
    assert sum(int(b["is_poisoned"].sum()) for b in single) > 0


def test_global_batch_must_split_evenly_over_ranks():
    import pytest

    from clipbackdoor.data.errors import DataError

    with pytest.raises(DataError, match="not divisible by the 3 processes"):
        EpochBatchSampler(100, 32, seed=0, world_size=3)


def test_caption_views_are_fixed_per_row_or_drawn_per_epoch():
    pairs = SyntheticPairs(num_samples=64, split="train", image_size=32)
    per_row = _batches(pairs)
    idx = list(range(64))
    first = per_row[idx]["text_aug"]
    per_row.set_epoch(3)
    assert torch.equal(per_row[idx]["text_aug"], first)
    per_epoch = _batches(pairs)
    per_epoch.text_augment_per = "epoch"
    view0 = per_epoch[idx]["text_aug"]
    per_epoch.set_epoch(3)
    assert not torch.equal(per_epoch[idx]["text_aug"], view0)
    # The views really differ from the captions they augment.
    assert not torch.equal(first, per_row[idx]["text"])


def test_splits_never_share_an_image():
    from clipbackdoor.data.datasets import generate_split

    train = generate_split(300, split="train", seed=0, where="t").images.flatten(1)
    test = generate_split(300, split="test", seed=0, where="t").images.flatten(1)
    # Any shared image would show up as an exact row match.
    assert not (train[:, None, :] == test[None, :, :]).all(dim=2).any()
