import torch

from clipbackdoor.data.augment_text import EDA
from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.data.pipeline import EpochBatchSampler, PairBatches, make_loader
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


def test_workers_give_the_same_batches_as_the_main_process():
    pairs = SyntheticPairs(num_samples=192, split="train", image_size=32)
    batches = _batches(pairs)
    sampler = EpochBatchSampler(len(pairs), 64, seed=0)
    sampler.set_epoch(1)
    batches.set_epoch(1)
    inline = list(make_loader(batches, sampler, num_workers=0))
    forked = list(make_loader(batches, sampler, num_workers=2))
    assert len(inline) == len(forked) == 3
    for a, b in zip(inline, forked):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


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
