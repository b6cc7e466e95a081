"""Every registered attack, from its defaults: it builds, draws JSON triggers, applies them on uint8 images
without touching its input, and its poison manifest alone regenerates the poisoned data bit for bit.

These run over ``ATTACKS.names()``, so an attack added later is covered without editing this file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipbackdoor.data.datasets import SyntheticPairs
from clipbackdoor.poison import ATTACKS, Poisoner, PoisonManifest, create_manifest

SIZE = 32


@pytest.fixture(scope="module")
def pairs():
    return SyntheticPairs(num_samples=400, split="train", image_size=SIZE)


def build(name: str):
    return ATTACKS.build({"name": name}, "attack")


@pytest.mark.parametrize("name", ATTACKS.names())
def test_builds_from_its_defaults_and_applies(name):
    attack = build(name)
    assert attack.name == name and attack.target
    rng = np.random.default_rng(0)
    triggers = [attack.sample_trigger(rng, SIZE) for _ in range(4)]
    json.dumps(triggers)  # they go into the manifest
    images = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8)
    before = images.clone()
    out = attack.apply(images, triggers)
    assert torch.equal(images, before), "apply must not modify its input"
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images), "the trigger changes the images"
    # Applying to a batch is applying to each image.
    one_by_one = torch.cat([attack.apply(images[i : i + 1], triggers[i : i + 1]) for i in range(4)])
    assert torch.equal(out, one_by_one)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_params_rebuild_the_same_attack(name):
    attack = build(name)
    params = json.loads(json.dumps(attack.params()))  # what a manifest stores
    rebuilt = ATTACKS.build(params, "poison manifest attack")
    rng = np.random.default_rng(1)
    triggers = [attack.sample_trigger(rng, SIZE) for _ in range(3)]
    images = torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8)
    assert torch.equal(attack.apply(images, triggers), rebuilt.apply(images, triggers))


@pytest.mark.parametrize("name", ATTACKS.names())
def test_manifest_alone_regenerates_the_poisoned_data(tmp_path, pairs, name):
    attack = build(name)
    budget = 12
    manifest = create_manifest(pairs, attack, budget, seed=3)
    manifest.write(tmp_path / "poison_manifest.json")
    indices = manifest.indices
    images, _ = pairs.load_images(indices)
    captions = [pairs.caption(i) for i in indices]
    first = Poisoner(manifest, attack)(indices, images, captions)
    # A new process has only the file: the attack is rebuilt from the manifest's own parameters.
    again = Poisoner(PoisonManifest.read(tmp_path / "poison_manifest.json"))(indices, images.clone(), captions)
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and bool(first[2].all())
    # The same seed draws the same manifest.
    assert create_manifest(pairs, attack, budget, seed=3).to_dict() == manifest.to_dict()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_has_a_label_consistent_variant(pairs, name):
    # Clean-label poisoning: only pairs whose caption already names the target, captions kept as they are.
    attack = ATTACKS.build({"name": name, "label_consistent": True}, "attack")
    manifest = create_manifest(pairs, attack, 5, seed=0)
    assert len(manifest.samples) == 5
    for s in manifest.samples:
        assert attack.target in s["original_caption"].lower()
        assert s["caption"] == s["original_caption"]
