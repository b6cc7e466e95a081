"""Reports label runs from their config: a defense or objective that reporting has never heard of appears
in the tables and figures under the name its config gives, with no change to reporting."""

import yaml
from run_dirs import make_run

from clipbackdoor.reporting.collect import collect_runs, objective_label
from clipbackdoor.reporting.report import write_report


def test_objective_label_names_every_weighted_term_in_config_order():
    assert objective_label({"clip_weight": 1, "inmodal_weight": 1}) == "MMCL+SSL"
    assert objective_label({"clip_weight": 1, "inmodal_weight": 0, "cyclip_weight": 1}) == "MMCL+cyclip"
    assert objective_label({"clip_weight": 0, "siglip_weight": 0.1, "siglip": {"bias": True}}) == "siglip"
    assert objective_label({"clip_weight": 0}) == "none"


def _set_objective(run, objective):
    path = run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["objective"] = objective
    path.write_text(yaml.safe_dump(config))


def test_new_defense_and_objective_reach_tables_and_plots(tmp_path):
    siglip = {"clip_weight": 0.0, "inmodal_weight": 0.0, "siglip_weight": 1.0}
    for name, poison, asr in (("pre/siglip", 0.1, 0.9), ("pre/siglip-ctl", 0.0, 0.02)):
        _set_objective(make_run(tmp_path, name, evals=[(0.1, 0.0, None), (0.5, asr, None)], poison=poison), siglip)
    for src, asr in (("siglip", 0.9), ("siglip-ctl", 0.02)):
        for defense in ("some_new_defense", "shrink_perturb"):
            make_run(tmp_path, f"clean/{src}/{defense}", evals=[(0.5, asr, 2.5), (0.45, 0.05, 2.0), (0.44, 0.02, 1.9)],
                     source=f"pre/{src}", defense=defense)
    runs = {r.name: r for r in collect_runs(tmp_path)}
    assert runs["pre/siglip"].objective == "siglip"
    assert runs["clean/siglip/some_new_defense"].method == "some_new_defense"
    report = write_report(tmp_path)
    summary = report.summary_md
    assert "some_new_defense" in summary and "shrink_perturb" in summary and "siglip" in summary
    assert (report.out / "plots" / "tradeoff.png").stat().st_size > 0


def test_cleaning_without_a_defense_is_named_by_its_objective(tmp_path):
    make_run(tmp_path, "pre/mmcl", evals=[(0.1, 0.0, None), (0.5, 0.9, None)], poison=0.1)
    make_run(tmp_path, "clean/mmcl/plain", evals=[(0.5, 0.9, 2.5), (0.45, 0.3, 2.0)], source="pre/mmcl",
             objective=(1.0, 1.0))
    assert {r.name: r for r in collect_runs(tmp_path)}["clean/mmcl/plain"].method == "fine-tune MMCL+SSL"


def test_a_defense_option_and_the_setting_it_resolves_to_are_named_once():
    from clipbackdoor.reporting.collect import RunInfo
    from clipbackdoor.reporting.labels import run_settings

    run = RunInfo(name="x", path=None, config={}, kind="clean", objective="MMCL+SSL", method="heavy_l2", seed=0,
                  evals=[], complete=True, lr=1e-3,
                  params={"train.weight_decay": 10.0, "defense.weight_decay": 10, "defense.name": "heavy_l2"})
    assert run_settings(run) == "lr 0.001, weight_decay 10"
