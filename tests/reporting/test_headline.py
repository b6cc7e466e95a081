"""The paper's headline as three targets, on hand-made run directories with known answers."""

import pytest
from run_dirs import make_run

from clipbackdoor.reporting.analysis import analyse
from clipbackdoor.reporting.collect import collect_runs
from clipbackdoor.reporting.headline import headline_targets, targets_markdown
from clipbackdoor.reporting.report import write_report


def _experiment(root, seed, *, mmcl, ssl, asr=(0.95, 0.95), control=-0.01):
    """One seed: MMCL and MMCL+SSL models (poisoned, and un-poisoned controls) cleaned by CleanCLIP.

    ``mmcl``/``ssl`` are the accuracy changes of the poisoned models' cleaning at ASR 0.05 (None: ASR stays
    at 0.5); every control changes by ``control``.
    """
    for name, objective, change, start_asr in (("mmcl", (1.0, 0.0), mmcl, asr[0]), ("ssl", (1.0, 1.0), ssl, asr[1])):
        make_run(root, f"pre/{name}-s{seed}", evals=[(0.1, 0.0, None), (0.6, start_asr, None)], objective=objective,
                 poison=0.1, seed=seed)
        make_run(root, f"pre/{name}-ctl-s{seed}", evals=[(0.1, 0.0, None), (0.6, 0.02, None)], objective=objective,
                 seed=seed)
        cleaned = (0.6 + change, 0.05, 2.0) if change is not None else (0.6, 0.5, 2.0)
        make_run(root, f"clean/{name}-s{seed}", evals=[(0.6, start_asr, 2.5), cleaned], objective=(1.0, 1.0),
                 source=f"pre/{name}-s{seed}", defense="cleanclip", seed=seed)
        make_run(root, f"clean/{name}-ctl-s{seed}", evals=[(0.6, 0.02, 2.5), (0.6 + control, 0.02, 2.0)],
                 objective=(1.0, 1.0), source=f"pre/{name}-ctl-s{seed}", defense="cleanclip", seed=seed)


def _targets(root):
    return {t.key: t for t in headline_targets(analyse(collect_runs(root)))}


def test_the_headline_met_in_every_seed(tmp_path):
    for seed, ssl in enumerate([-0.11, -0.09, None]):
        _experiment(tmp_path, seed, mmcl=-0.02, ssl=ssl)
    t = _targets(tmp_path)
    assert t["learned"].met and t["learned"].detail == "MMCL 95.0%, MMCL+SSL 95.0%"
    # Net of the control's -1 point: MMCL costs 1 point, MMCL+SSL 10 and 8 points, or never gets there.
    assert t["mmcl_cleaned"].met
    assert t["mmcl_cleaned"].detail == "net accuracy change per seed (points): -1.0, -1.0, -1.0"
    assert t["ssl_costlier"].met
    assert t["ssl_costlier"].detail == "gap per seed (points): +9.0, +7.0, SSL never reached; mean +8.0 ± 1.4"


def test_each_target_fails_on_its_own(tmp_path):
    weak = tmp_path / "weak"
    _experiment(weak, 0, mmcl=-0.02, ssl=-0.11, asr=(0.95, 0.40))  # MMCL+SSL barely learned the poison
    assert [t.met for t in _targets(weak).values()] == [False, True, True]
    costly = tmp_path / "costly"
    _experiment(costly, 0, mmcl=-0.05, ssl=-0.11)  # cleaning MMCL costs 4 points net
    assert [t.met for t in _targets(costly).values()] == [True, False, True]
    close = tmp_path / "close"
    _experiment(close, 0, mmcl=-0.02, ssl=-0.05)  # a 3-point gap
    assert [t.met for t in _targets(close).values()] == [True, True, False]
    spread = tmp_path / "spread"
    for seed, ssl in enumerate([-0.08, -0.30]):  # gaps of 6 and 28 points: each >= 5, but 17 ± 15.6
        _experiment(spread, seed, mmcl=-0.02, ssl=ssl)
    assert _targets(spread)["ssl_costlier"].met is False
    never = tmp_path / "never"
    _experiment(never, 0, mmcl=None, ssl=None)  # neither gets below 10%: nothing to compare
    t = _targets(never)
    assert t["mmcl_cleaned"].met is False and t["ssl_costlier"].met is False
    assert t["ssl_costlier"].detail == "gap per seed (points): MMCL never reached"


def test_without_controls_or_an_objective_the_targets_cannot_tell(tmp_path):
    make_run(tmp_path, "pre/mmcl", evals=[(0.1, 0.0, None), (0.6, 0.95, None)], poison=0.1)
    make_run(tmp_path, "clean/mmcl", evals=[(0.6, 0.95, 2.5), (0.59, 0.05, 2.0)], objective=(1.0, 1.0),
             source="pre/mmcl", defense="cleanclip")
    assert [t.met for t in _targets(tmp_path).values()] == [None, None, None]


def test_the_report_shows_the_targets(tmp_path):
    _experiment(tmp_path, 0, mmcl=-0.02, ssl=-0.11)
    report = write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "## The paper's headline" in summary and summary.count("| met |") == 3
    assert "The paper&#x27;s headline, as targets" in report.html_path.read_text()
    assert targets_markdown(headline_targets(report.groups)) in summary


@pytest.mark.parametrize("missing", ["mmcl-ctl", "ssl-ctl"])
def test_a_missing_control_is_never_counted_as_free(tmp_path, missing):
    _experiment(tmp_path, 0, mmcl=-0.02, ssl=-0.11)
    import shutil

    shutil.rmtree(tmp_path / "clean" / f"{missing}-s0")
    t = _targets(tmp_path)
    assert t["ssl_costlier"].met is None


def test_asr_decay_compares_the_objectives_at_each_learning_rate(tmp_path):
    from clipbackdoor.reporting.headline import asr_decay, decay_text

    for seed in (0, 1):
        _experiment(tmp_path, seed, mmcl=-0.02, ssl=None)  # MMCL+SSL stays at ASR 0.5 after its epoch
    decay = asr_decay(analyse(collect_runs(tmp_path)))
    assert [(d.lr, d.epoch, d.mmcl, d.ssl) for d in decay] == [(1e-3, 1, 0.05, 0.5)]
    assert decay_text(decay) == ("The MMCL+SSL backdoor decays more slowly than the MMCL one at every cleaning "
                                 "learning rate (ASR of MMCL against MMCL+SSL, mean over seeds; lr 0.001: 5.0% "
                                 "against 50.0% after 1 epoch).")
    report = write_report(tmp_path)
    # MMCL+SSL never gets under the bound, which meets all three targets: no pointer elsewhere.
    assert decay_text(decay) in report.verdict and "--preset headline" not in report.verdict


def test_a_verdict_whose_targets_are_not_met_says_which_and_where_to_look(tmp_path):
    _experiment(tmp_path, 0, mmcl=-0.02, ssl=-0.05)  # a 3-point gap
    verdict = write_report(tmp_path).verdict
    assert "(learned: met; mmcl_cleaned: met; ssl_costlier: not met)" in verdict
    assert "`clipbackdoor demo --preset headline`" in verdict


def test_asr_decay_needs_both_objectives(tmp_path):
    from clipbackdoor.reporting.headline import asr_decay, decay_text

    _experiment(tmp_path, 0, mmcl=-0.02, ssl=-0.05)
    groups = [g for g in analyse(collect_runs(tmp_path)) if g.objective == "MMCL"]
    assert asr_decay(groups) == [] and decay_text([]) == ""
