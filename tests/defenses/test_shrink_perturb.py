"""shrink_perturb: theta <- shrink * theta + perturb * theta_fresh once, seeded, parameters only."""

import pytest
import torch
from safetensors.torch import load_file

from clipbackdoor.config import load_config
from clipbackdoor.defenses import DEFENSES, StartContext
from clipbackdoor.experiments.stages import clean_config
from clipbackdoor.models import create_model
from clipbackdoor.models.weights import read_weights
from clipbackdoor.registry import ConfigError
from clipbackdoor.seeding import derive_seed
from clipbackdoor.train.loop import run_training

TINY = ["data.train.num_samples=64", "data.eval.num_samples=60", "train.batch_size=64", "train.epochs=1",
        "train.warmup_steps=1", "train.progress=false", "train.threads=1", "eval.batch_size=60"]


class WithNorm(torch.nn.Module):
    def __init__(self, fill: float) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.bn = torch.nn.BatchNorm1d(2)
        for p in self.parameters():
            torch.nn.init.constant_(p, fill)
        self.bn.running_mean.fill_(fill)


def test_moves_every_parameter_and_no_buffer():
    model, fresh = WithNorm(2.0), WithNorm(-3.0)
    defense = DEFENSES.build({"name": "shrink_perturb", "shrink": 0.5, "perturb": 0.25})
    defense.start(StartContext(model=model, seed=0, device=torch.device("cpu"), fresh_model=lambda: fresh))
    for name, p in model.named_parameters():
        assert torch.allclose(p, torch.full_like(p, 0.5 * 2.0 + 0.25 * -3.0)), name
    assert torch.equal(model.bn.running_mean, torch.full((2,), 2.0))


def test_paper_defaults_and_cleanclip_objective():
    cfg = load_config(None, ["defense.name=shrink_perturb"])
    assert cfg.defense == {"name": "shrink_perturb"}
    assert cfg.objective == {"clip_weight": 1.0, "inmodal_weight": 1.0}
    d = DEFENSES.build({"name": "shrink_perturb"})
    assert (d.shrink, d.perturb) == (0.95, 1e-4)
    with pytest.raises(ConfigError, match="defense.shrink"):
        load_config(None, ["defense.name=shrink_perturb", "defense.shrink=-1"])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    run = tmp_path_factory.mktemp("source")
    run_training(load_config(None, TINY), run)
    return run


def _hooked(source, run_dir, *extra):
    """The weights a shrink_perturb run starts training from (its epoch-0 checkpoint, after the hook)."""
    cfg = clean_config(source, None, [*TINY, "train.epochs=0", "defense.shrink=0.9", "defense.perturb=0.5",
                                      *extra], defense="shrink_perturb")
    run_training(cfg, run_dir)
    return cfg, load_file(run_dir / "checkpoints" / "epoch_0.safetensors")


def test_the_loop_applies_it_to_the_starting_weights_with_a_seeded_fresh_model(source, tmp_path):
    cfg, hooked = _hooked(source, tmp_path / "a")
    poisoned = read_weights(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "fresh-model"))
        fresh = create_model(**cfg.model).model.state_dict()
    params = dict(create_model(**cfg.model).model.named_parameters())
    for key, theta in poisoned.items():
        expected = 0.9 * theta + 0.5 * fresh[key] if key in params else theta
        torch.testing.assert_close(hooked[key], expected, msg=key)
    # The same seed gives the same weights; another seed another perturbation.
    assert all(torch.equal(hooked[k], v) for k, v in _hooked(source, tmp_path / "b")[1].items())
    other = _hooked(source, tmp_path / "c", "seed=7")[1]
    assert any(not torch.equal(hooked[k], other[k]) for k in params)
