"""ValidationLoss: the defender's model-selection signal must be exactly the CLIP loss on held-out pairs."""

import math

import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from reference_losses import ref_ce_rows

from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.models import create_model
from clipbackdoor.train.validation import ValidationLoss

# Tiny models: one torch thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle():
    return create_model("tiny-clip")


@pytest.fixture(scope="module")
def pairs():
    return SyntheticPairs(num_samples=50, split="val", seed=3, image_size=32)


def hand_loss(model, tokenizer, pairs, batches):
    """The symmetric InfoNCE written out per batch from the model's encoders, with its own normalisation and
    scalar cross-entropy, so a wrong axis, scale or normalisation in ValidationLoss cannot cancel out."""
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    model.eval()
    losses = []
    with torch.no_grad():
        for idx in batches:
            images, _ = pairs.load_images(idx)
            u = model.encode_image((images.float() / 255 - mean) / std, normalize=True).double()
            v = model.encode_text(tokenizer([pairs.caption(i) for i in idx]), normalize=True).double()
            s = model.logit_scale.exp().item()
            losses.append(0.5 * (ref_ce_rows(u, v, s) + ref_ce_rows(v, u, s)))
    return sum(losses) / len(losses)


def test_equals_the_hand_computed_clip_loss_over_full_batches(bundle, pairs):
    val = ValidationLoss(pairs, bundle.tokenizer, batch_size=20)
    got = val(bundle.model)
    full = [list(range(0, 20)), list(range(20, 40))]
    assert got == pytest.approx(hand_loss(bundle.model, bundle.tokenizer, pairs, full), rel=1e-5)
    # The 10 pairs left over are dropped: a smaller batch has an easier softmax, so averaging it in would
    # bias the loss of a validation set whose size is not a multiple of the batch size.
    with_partial = hand_loss(bundle.model, bundle.tokenizer, pairs, [*full, list(range(40, 50))])
    assert got != pytest.approx(with_partial, rel=1e-4)


def test_a_batch_size_larger_than_the_set_makes_one_batch_of_everything(bundle, pairs):
    # Otherwise a small held-out set would silently yield no batch at all (and a division by zero).
    val = ValidationLoss(pairs, bundle.tokenizer, batch_size=500)
    assert val.batch_size == 50
    expected = hand_loss(bundle.model, bundle.tokenizer, pairs, [list(range(50))])
    assert val(bundle.model) == pytest.approx(expected, rel=1e-5)


class FlakyPairs:
    """Pairs whose image 3 cannot be read, as a CSV set in on_error=skip mode reports it."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def caption(self, i):
        return self.pairs.caption(i)

    def load_images(self, idx):
        images, ok = self.pairs.load_images(idx)
        ok = ok.clone()
        ok[[n for n, i in enumerate(idx) if i == 3]] = False
        return images, ok


def test_unreadable_images_leave_their_batch_with_their_captions(bundle, pairs):
    # Dropping an image but keeping its caption would shift every later caption onto the wrong image.
    val = ValidationLoss(FlakyPairs(pairs), bundle.tokenizer, batch_size=25)
    kept = [[i for i in range(25) if i != 3], list(range(25, 50))]
    assert val(bundle.model) == pytest.approx(hand_loss(bundle.model, bundle.tokenizer, pairs, kept), rel=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_evaluates_in_eval_mode_and_restores_the_mode(bundle, pairs, training):
    # Called in the middle of training: leaving the model in eval mode would silently disable dropout for
    # the rest of the run, and evaluating in training mode would make the loss depend on dropout draws.
    model = bundle.model
    seen = []
    hook = model.visual.register_forward_hook(lambda module, args, out: seen.append(module.training))
    try:
        model.train(training)
        ValidationLoss(pairs, bundle.tokenizer, batch_size=25)(model)
    finally:
        hook.remove()
    assert seen == [False, False]
    assert all(m.training == training for m in model.modules())


def test_is_deterministic_and_leaves_the_model_untouched(bundle, pairs):
    # Runs are compared by this number, so two calls on the same weights must agree exactly, and evaluating
    # must neither change the weights nor leave gradients behind.
    model = bundle.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    val = ValidationLoss(pairs, bundle.tokenizer, batch_size=25)
    first, second = val(model), val(model)
    assert first == second and math.isfinite(first)
    assert ValidationLoss(pairs, bundle.tokenizer, batch_size=25)(model) == first
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_tracks_the_weights_it_is_given(bundle, pairs):
    # A loss computed from cached features would not move when the model does; after a few steps on the
    # validation pairs' own loss it must go down.
    model = create_model("tiny-clip").model  # trained here; the shared model stays untouched
    val = ValidationLoss(pairs, bundle.tokenizer, batch_size=50)
    before = val(model)
    images, _ = pairs.load_images(list(range(50)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(3):
        u, v, s = model(val.normalize(images), bundle.tokenizer([pairs.caption(i) for i in range(50)]))[:3]
        logits = s * u @ v.T
        target = torch.arange(50)
        loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                      + torch.nn.functional.cross_entropy(logits.T, target))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    assert val(model) < before
