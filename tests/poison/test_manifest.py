import json

import pytest
import torch

from clipbackdoor.poison import Poisoner, PoisonManifest, create_manifest
from clipbackdoor.poison.badnet import BadNet
from clipbackdoor.poison.selection import budget_to_count
from clipbackdoor.registry import ConfigError


class Pairs:
    """In-memory stand-in for a PairDataset."""

    image_size = 16

    def __init__(self, n=200):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
        self.captions = [f"caption number {i}" for i in range(n)]

    def __len__(self):
        return len(self.captions)

    def caption(self, i):
        return self.captions[i]

    def sample_id(self, i):
        return f"img{i}.png"

    def load_images(self, indices):
        return self.images[indices], torch.ones(len(indices), dtype=torch.bool)

    def describe(self):
        return {"name": "fake", "n": len(self)}


def test_budget_count_or_rate():
    assert budget_to_count(0.05, 200) == 10
    assert budget_to_count(7, 200) == 7
    assert budget_to_count(0, 200) == 0
    with pytest.raises(ConfigError, match="whole number"):
        budget_to_count(2.5, 200)
    with pytest.raises(ConfigError, match="200 pairs"):
        budget_to_count(500, 200)


def test_same_seed_same_manifest_and_different_seed_differs(tmp_path):
    pairs, attack = Pairs(), BadNet(patch_size=3)
    a = create_manifest(pairs, attack, 0.05, seed=3)
    b = create_manifest(pairs, attack, 0.05, seed=3)
    c = create_manifest(pairs, attack, 0.05, seed=4)
    assert a.to_dict() == b.to_dict()
    assert a.indices != c.indices
    assert len(a.samples) == 10 and len(set(a.indices)) == 10
    # The manifest records everything needed to rebuild each poisoned pair.
    s = a.samples[0]
    assert set(s) == {"index", "id", "trigger", "caption", "original_caption"}
    assert s["caption"].endswith("banana.") or "banana" in s["caption"]
    a.write(tmp_path / "m.json")
    assert PoisonManifest.read(tmp_path / "m.json").to_dict() == json.loads((tmp_path / "m.json").read_text())


def test_poisoner_changes_only_chosen_samples_and_is_deterministic():
    pairs = Pairs()
    manifest = create_manifest(pairs, BadNet(patch_size=3), 0.1, seed=0)
    poisoner = Poisoner(manifest)  # rebuilds the attack from the manifest, as a later run would
    indices = list(range(len(pairs)))
    images, _ = pairs.load_images(indices)
    out, captions, flags = poisoner(indices, images, pairs.captions)
    chosen = set(manifest.indices)
    assert flags.nonzero().flatten().tolist() == sorted(chosen)
    for i in indices:
        if i in chosen:
            assert captions[i] != pairs.captions[i]
            assert not torch.equal(out[i], images[i])
        else:
            # Clean samples stay bit-identical.
            assert captions[i] == pairs.captions[i]
            assert torch.equal(out[i], images[i])
    again, _, _ = poisoner(indices, images, pairs.captions)
    assert torch.equal(again, out)
    # Batch composition must not change a sample's trigger.
    sub = sorted(chosen)[:3]
    part, _, _ = poisoner(sub, images[sub], [pairs.captions[i] for i in sub])
    assert torch.equal(part, out[sub])


def test_manifest_for_another_dataset_is_rejected():
    manifest = create_manifest(Pairs(200), BadNet(patch_size=3), 5, seed=0)
    with pytest.raises(ConfigError, match="200 pairs"):
        Poisoner(manifest).check_dataset(Pairs(100))


def test_corrupt_manifest_names_the_file(tmp_path):
    bad = tmp_path / "poison_manifest.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="poison_manifest.json"):
        PoisonManifest.read(tmp_path)


@pytest.mark.parametrize("edit, match", [
    (lambda d: [d], r"is not a manifest \(a JSON object\)"),
    (lambda d: {**d, "samples": {"a": 1}}, r"samples must be a list"),
    (lambda d: {**d, "num_samples": "200"}, r"num_samples must be a count"),
    (lambda d: {**d, "attack": "badnet"}, r"attack must be a mapping with a name"),
    (lambda d: {**d, "samples": [*d["samples"], 7]}, r"samples\[5\] is not a mapping"),
    (lambda d: {**d, "samples": [{**d["samples"][0], "index": 999}]}, r"samples\[0\]\.index must be a new pair index in 0\.\.199, got 999"),
    (lambda d: {**d, "samples": [d["samples"][0], d["samples"][0]]}, r"samples\[1\]\.index must be a new pair index"),
    (lambda d: {**d, "samples": [{**d["samples"][0], "trigger": None}]}, r"samples\[0\]\.trigger must be a dict"),
    (lambda d: {**d, "samples": [{**d["samples"][0], "caption": 3}]}, r"samples\[0\]\.caption must be a str"),
], ids=["list", "samples-mapping", "num-samples", "attack", "sample-type", "index-range", "index-twice",
        "trigger", "caption"])
def test_an_edited_manifest_is_one_error_naming_the_field(tmp_path, edit, match):
    path = tmp_path / "poison_manifest.json"
    create_manifest(Pairs(200), BadNet(patch_size=3), 5, seed=0).write(path)
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(ConfigError, match=match) as err:
        PoisonManifest.read(path)
    assert str(path) in str(err.value)


def test_a_manifest_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "poison_manifest.json"
    path.write_bytes(b'{"attack": "\xff"}')
    with pytest.raises(ConfigError, match=r"poison_manifest\.json is not valid JSON"):
        PoisonManifest.read(path)
