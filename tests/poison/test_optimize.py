import pytest
import torch

from clipbackdoor.models import create_model
from clipbackdoor.poison.image_patch import noise_patch_image
from clipbackdoor.poison.optimize import optimize_patch, target_similarity
from clipbackdoor.poison.placement import Placement

TEMPLATES = ["a photo of a {}.", "a {} shape."]


# Tiny models: one torch thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return create_model("tiny-clip")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=g)


def _optimize(bundle, images, **kwargs):
    args = dict(target="banana", templates=TEMPLATES, patch_size=12, steps=15, lr=0.1, batch_size=16, seed=0)
    return optimize_patch(bundle.model, bundle.tokenizer, images, **{**args, **kwargs})


def test_raises_the_target_similarity_over_the_initial_patch(bundle, images):
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    patch = _optimize(bundle, images)
    assert patch.dtype == torch.uint8 and patch.shape == (3, 12, 12)
    # The model is untouched: same weights, no gradients, back in its previous mode.
    assert all(torch.equal(v, bundle.model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in bundle.model.parameters())
    assert bundle.model.training

    def similarity(p):
        return target_similarity(bundle.model, bundle.tokenizer, images, p, target="banana", templates=TEMPLATES,
                                 seed=5)

    initial = noise_patch_image(12, 0)  # where the optimisation starts
    # An untrained tiny model barely tells images apart, so the gain is small, but it is consistent.
    assert similarity(patch) > similarity(initial) + 1e-4
    assert similarity(patch) > similarity(noise_patch_image(12, 1))


def test_deterministic_from_the_seed(bundle, images):
    a = _optimize(bundle, images, steps=4)
    assert torch.equal(a, _optimize(bundle, images, steps=4))
    assert not torch.equal(a, _optimize(bundle, images, steps=4, seed=1))


def test_fixed_placement_and_more_images_than_a_batch(bundle, images):
    patch = _optimize(bundle, images[:5], steps=2, placement=Placement("fixed", [0, 0]), batch_size=8)
    assert patch.shape == (3, 12, 12)


def test_bad_images_are_rejected(bundle, images):
    with pytest.raises(ValueError, match="uint8"):
        _optimize(bundle, images.float())
    with pytest.raises(Exception, match="does not fit"):
        _optimize(bundle, images, patch_size=40)
