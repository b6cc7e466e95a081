"""The Evaluator against a fake model whose answers are known in advance (big_vision's testing style).

Each fake image carries, in its pixels, which class the fake model will answer and how susceptible it is to
the trigger; the fake trigger sets a marker pixel. So every expected metric below is a count over a table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipbackdoor.data.transforms import Normalize
from clipbackdoor.eval.runner import Evaluator
from clipbackdoor.registry import ConfigError

CLASSNAMES = ("apple", "banana", "cherry", "date", "elderberry", "fig", "grape")
TARGET = 1  # banana
C = len(CLASSNAMES)
S = 4  # image side
NONE, WEAK, STRONG = 0, 128, 255  # trigger susceptibility stored in pixel (2, 0, 0)

# (true label, clean answer, susceptibility); the fake model ranks the answer first, then the other classes
# in index order, and the target last (so target-in-top-5 only happens by the trigger or the answer).
TABLE = [
    (0, 0, STRONG),  # 0: correct; trigger -> target first
    (2, 2, WEAK),  # 1: correct; trigger -> target second (top-5 only)
    (3, 0, NONE),  # 2: wrong; top-5 {0,2,3,4,5} holds 3; trigger does nothing
    (6, 0, STRONG),  # 3: wrong, 6 not in top-5 {0,2,3,4,5}; trigger -> target
    (1, 1, STRONG),  # 4: a banana called banana: excluded from ASR
    (1, 2, NONE),  # 5: a banana, excluded from ASR; top-5 {2,0,3,4,5} misses 1
    (4, 1, NONE),  # 6: clean model already says banana: counts for ASR and clean_target_rate
    (5, 5, WEAK),  # 7: correct; trigger -> target second
    (6, 6, NONE),  # 8: correct; trigger does nothing
    (2, 3, STRONG),  # 9: wrong, top-5 {3,0,2,4,5} holds 2; trigger -> target
]
# top-1: images 0,1,4,7,8 -> 5/10; top-5: all but 3 and 5 -> 8/10
# ASR set: 8 images (4 and 5 excluded); top-1 hits: strong 0,3,9 + image 6 -> 4/8; top-5 adds weak 1,7 -> 6/8
# clean_target_rate: image 6 -> 1/8


class FakeDataset:
    def __init__(self, table=TABLE, templates=("a photo of a {}.", "a {} on a table.")):
        self.image_size = S
        self.classnames = CLASSNAMES
        self.templates = templates
        self.labels = torch.tensor([row[0] for row in table])
        self.images = torch.zeros(len(table), 3, S, S, dtype=torch.uint8)
        for i, (_, answer, sus) in enumerate(table):
            self.images[i, 0, 0, 0] = answer * 20 + 10
            self.images[i, 2, 0, 0] = sus
        self.loaded: list[list[int]] = []

    def __len__(self):
        return len(self.labels)

    def load_images(self, indices):
        self.loaded.append(list(indices))
        return self.images[list(indices)].clone()


def fake_tokenizer(prompts: list[str]) -> torch.Tensor:
    # one "token": the index of the class named in the prompt (prompts are template.format(classname))
    ids = []
    for p in prompts:
        matches = [i for i, c in enumerate(CLASSNAMES) if c in p]
        assert len(matches) == 1, p
        ids.append(matches[0])
    return torch.tensor(ids)[:, None]


class FakeModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.norm = Normalize()
        self.modes_seen: list[bool] = []

    def encode_text(self, tokens):
        self.modes_seen.append(self.training)
        return torch.nn.functional.one_hot(tokens[:, 0], C).float() * 3.0  # scale: the evaluator normalises

    def encode_image(self, x):
        self.modes_seen.append(self.training)
        # undo the evaluator's CLIP normalisation to read the marker pixels back
        raw = (x * self.norm.std + self.norm.mean).round().to(torch.int64)
        out = torch.zeros(len(x), C)
        for i in range(len(x)):
            answer = (int(raw[i, 0, 0, 0]) - 10) // 20
            sus = int(raw[i, 2, 0, 0])
            triggered = int(raw[i, 1, 0, 0]) == 255
            scores = torch.tensor([-0.1 * (j + 1) for j in range(C)])
            scores[TARGET] = -5.0
            scores[answer] = 10.0
            if triggered and sus == STRONG:
                scores[TARGET] = 20.0
            elif triggered and sus == WEAK:
                scores[TARGET] = 5.0
            out[i] = scores
        return out


class FakeAttack:
    """Marks pixel (1, 0, 0). With ``p_fire`` < 1 a trigger instance may be a dud, so draws differ."""

    def __init__(self, target="banana", p_fire=1.0):
        self.target = target
        self.p_fire = p_fire
        self.sizes: list[int] = []

    def sample_trigger(self, rng: np.random.Generator, image_size: int):
        self.sizes.append(image_size)
        return {"on": bool(rng.random() < self.p_fire)}

    def apply(self, images, triggers):
        assert images.dtype == torch.uint8 and len(images) == len(triggers)
        out = images.clone()
        for i, t in enumerate(triggers):
            if t["on"]:
                out[i, 1, 0, 0] = 255
        return out


def expected_hits(i: int, on: bool) -> tuple[int, int]:
    """(top-1, top-5) target hits of triggered image i, read off TABLE (the model's rule in words)."""
    _, answer, sus = TABLE[i]
    if answer == TARGET or (on and sus == STRONG):
        return 1, 1
    if on and sus == WEAK:
        return 0, 1
    return 0, 0


@pytest.mark.parametrize("batch_size", [500, 3, 1])
def test_exact_metrics(batch_size):
    # Batch sizes that split the set unevenly check that labels and frozen triggers stay aligned per batch.
    ev = Evaluator(FakeDataset(), fake_tokenizer, FakeAttack(), batch_size=batch_size)
    m = ev(FakeModel())
    assert m["eval_images"] == 10
    assert m["zeroshot_top1"] == pytest.approx(0.5)
    assert m["zeroshot_top5"] == pytest.approx(0.8)
    # denominator excludes the two banana images (system.md section 3.2: 49,950 not 50,000)
    assert m["asr_images"] == 8
    assert m["asr_top1"] == pytest.approx(4 / 8)
    assert m["asr_top5"] == pytest.approx(6 / 8)
    assert m["clean_target_rate"] == pytest.approx(1 / 8)
    assert "asr_top1_std" not in m


def test_target_images_are_not_triggered():
    # The banana images never reach the attack: 8 triggered images in total, each of them a non-banana.
    ds = FakeDataset()
    attack = FakeAttack()
    applied = []
    orig = attack.apply

    def spy(images, triggers):
        applied.append(images.clone())
        return orig(images, triggers)

    attack.apply = spy
    Evaluator(ds, fake_tokenizer, attack, batch_size=4)(FakeModel())
    imgs = torch.cat(applied)
    assert len(imgs) == 8
    answers = ((imgs[:, 0, 0, 0].long() - 10) // 20).tolist()
    assert answers == [TABLE[i][1] for i in range(10) if TABLE[i][0] != TARGET]


def test_no_attack_measures_accuracy_only():
    m = Evaluator(FakeDataset(), fake_tokenizer, None)(FakeModel())
    classes = len(FakeDataset().classnames)
    assert m == {"zeroshot_top1": 0.5, "zeroshot_top5": 0.8, "eval_images": 10, "eval_classes": classes}


def test_max_images_limits_the_set():
    ds = FakeDataset()
    m = Evaluator(ds, fake_tokenizer, FakeAttack(), max_images=4)(FakeModel())
    # images 0..3: top-1 hits 0,1; ASR set 0..3 (no banana) with hits 0,3
    assert m["eval_images"] == 4
    assert m["zeroshot_top1"] == pytest.approx(0.5)
    assert m["asr_images"] == 4 and m["asr_top1"] == pytest.approx(0.5)
    assert max(i for batch in ds.loaded for i in batch) == 3


def test_triggers_are_frozen_across_calls_and_seeded():
    # With random duds, ASR is a random variable; it must not change between epochs (calls), and the same
    # seed must give the same triggers in a new evaluator (resume, re-evaluation).
    model = FakeModel()
    ev = Evaluator(FakeDataset(), fake_tokenizer, FakeAttack(p_fire=0.5), seed=7)
    first = ev(model)
    second = ev(model)
    assert first == second
    again = Evaluator(FakeDataset(), fake_tokenizer, FakeAttack(p_fire=0.5), seed=7)
    assert again.triggers == ev.triggers
    assert again(model) == first


def test_trigger_sampled_with_dataset_image_size():
    attack = FakeAttack()
    Evaluator(FakeDataset(), fake_tokenizer, attack, draws=2)
    assert attack.sizes == [S] * 20  # one trigger per image per draw, drawn once at construction


def test_several_draws_give_mean_and_std():
    draws = 4
    ev = Evaluator(FakeDataset(), fake_tokenizer, FakeAttack(p_fire=0.5), draws=draws, seed=3, batch_size=3)
    m = ev(FakeModel())
    assert len(ev.triggers) == draws and all(len(t) == 10 for t in ev.triggers)
    # reference: per-draw rates from the stored triggers, image by image
    counted = [i for i in range(10) if TABLE[i][0] != TARGET]
    r1 = [sum(expected_hits(i, ev.triggers[d][i]["on"])[0] for i in counted) / 8 for d in range(draws)]
    r5 = [sum(expected_hits(i, ev.triggers[d][i]["on"])[1] for i in counted) / 8 for d in range(draws)]
    assert len(set(r1)) > 1, "draws should differ for this seed; otherwise the std check is vacuous"
    assert m["asr_top1"] == pytest.approx(float(np.mean(r1)))
    assert m["asr_top5"] == pytest.approx(float(np.mean(r5)))
    assert m["asr_top1_std"] == pytest.approx(float(np.std(r1, ddof=1)))
    # the clean numbers do not depend on the draws
    assert m["zeroshot_top1"] == pytest.approx(0.5) and m["clean_target_rate"] == pytest.approx(1 / 8)


@pytest.mark.parametrize("start_training", [True, False])
def test_model_mode_restored_and_eval_mode_inside(start_training):
    model = FakeModel()
    model.train(start_training)
    Evaluator(FakeDataset(), fake_tokenizer, FakeAttack())(model)
    assert model.training is start_training
    assert model.modes_seen and not any(model.modes_seen)  # every encode ran in eval mode


def test_mode_restored_when_model_raises():
    class Broken(FakeModel):
        def encode_image(self, x):
            raise RuntimeError("boom")

    model = Broken()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        Evaluator(FakeDataset(), fake_tokenizer, FakeAttack())(model)
    assert model.training


def test_no_gradients_recorded():
    class GradModel(FakeModel):
        def encode_image(self, x):
            self.grad_enabled = torch.is_grad_enabled()
            return super().encode_image(x) + 0 * self.dummy

    model = GradModel()
    Evaluator(FakeDataset(), fake_tokenizer, None)(model)
    assert model.grad_enabled is False


def test_unknown_target_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="kiwi"):
        Evaluator(FakeDataset(), fake_tokenizer, FakeAttack(target="kiwi"))


def test_target_found_case_insensitively():
    ev = Evaluator(FakeDataset(), fake_tokenizer, FakeAttack(target="BANANA"))
    assert ev.target == TARGET
