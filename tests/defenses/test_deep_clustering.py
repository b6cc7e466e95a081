"""deep_clustering (defense): the objective it resolves to, its option checks, and no torch to read it.

The term itself, and a cleaning run through the loop with this defense, are tested in
tests/objectives/test_deep_clustering.py.
"""

import subprocess
import sys

import pytest

from clipbackdoor.config import load_config
from clipbackdoor.defenses import DEFENSES
from clipbackdoor.registry import ConfigError


def test_resolves_to_cleanclip_plus_the_papers_deep_clustering():
    cfg = load_config(None, ["defense.name=deep_clustering"])
    assert cfg.objective == {"clip_weight": 1.0, "inmodal_weight": 1.0, "deep_clustering_weight": 5.0,
                             "deep_clustering": {"k": 1000, "iterations": 20}}


def test_options_reach_the_objective():
    cfg = load_config(None, ["defense.name=deep_clustering", "defense.k=20", "defense.weight=2",
                             "defense.iterations=5", "defense.inmodal_weight=0"])
    assert cfg.objective == {"clip_weight": 1.0, "inmodal_weight": 0, "deep_clustering_weight": 2,
                             "deep_clustering": {"k": 20, "iterations": 5}}


def test_labels_mode_leaves_k_to_the_file_unless_given():
    patch = DEFENSES.build({"name": "deep_clustering", "labels": "labels.csv"}).config()
    assert patch["objective"]["deep_clustering"] == {"iterations": 20, "labels": "labels.csv"}
    patch = DEFENSES.build({"name": "deep_clustering", "labels": "labels.csv", "k": 1000}).config()
    assert patch["objective"]["deep_clustering"] == {"k": 1000, "iterations": 20, "labels": "labels.csv"}


def test_the_objective_builds_from_the_resolved_config():
    from clipbackdoor.objectives import build_objective

    objective = build_objective(load_config(None, ["defense.name=deep_clustering", "defense.k=7"]).objective,
                                embed_dim=16)
    assert set(objective.terms) == {"clip", "inmodal", "deep_clustering"}
    assert objective.weights["deep_clustering"] == 5.0
    assert objective.terms["deep_clustering"].head.weight.shape == (7, 16)


@pytest.mark.parametrize("option, value", [("k", 1), ("k", 2.5), ("iterations", 0), ("weight", -1),
                                           ("clip_weight", "a")])
def test_impossible_options_are_one_line_errors_naming_them(option, value):
    with pytest.raises(ConfigError, match=f"defense.{option}: must be"):
        load_config(None, ["defense.name=deep_clustering", f"defense.{option}={value}"])


def test_a_user_objective_conflicts_with_the_defense():
    with pytest.raises(ConfigError, match="conflicts with defense 'deep_clustering'"):
        load_config(None, ["defense.name=deep_clustering", "objective.deep_clustering_weight=1"])


def test_reading_the_config_needs_no_torch():
    code = ("import sys\nfrom clipbackdoor.config import load_config\n"
            "load_config(None, ['defense.name=deep_clustering', 'defense.k=10'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
