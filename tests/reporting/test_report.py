"""The report on hand-made run directories: lineage, controls, both selection rules, and the rendering."""

import csv
import json

import pytest
from run_dirs import make_run

from clipbackdoor.reporting.analysis import analyse
from clipbackdoor.reporting.collect import collect_runs
from clipbackdoor.reporting.report import verdict, write_report


@pytest.fixture
def runs(tmp_path):
    """MMCL and MMCL+SSL models (poisoned and control), each cleaned by CleanCLIP at two learning rates."""
    make_run(tmp_path, "pre/mmcl", evals=[(0.1, 0.0, None), (0.50, 0.90, None)], poison=0.1)
    make_run(tmp_path, "pre/mmcl-ctl", evals=[(0.1, 0.0, None), (0.52, 0.02, None)])
    make_run(tmp_path, "pre/ssl", evals=[(0.1, 0.0, None), (0.45, 0.95, None)], objective=(1.0, 1.0), poison=0.1)
    make_run(tmp_path, "pre/ssl-ctl", evals=[(0.1, 0.0, None), (0.47, 0.03, None)], objective=(1.0, 1.0))
    start = {"pre/mmcl": (0.50, 0.90), "pre/mmcl-ctl": (0.52, 0.02), "pre/ssl": (0.45, 0.95),
             "pre/ssl-ctl": (0.47, 0.03)}
    # Epoch-1 and epoch-2 (acc, asr, val_loss) per source and lr; epoch 0 repeats the source's evaluation.
    cleaning = {
        "pre/mmcl": {1e-3: [(0.48, 0.30, 2.0), (0.47, 0.08, 1.9)], 3e-3: [(0.44, 0.04, 2.1), (0.46, 0.01, 1.8)]},
        "pre/mmcl-ctl": {1e-3: [(0.51, 0.02, 2.0), (0.50, 0.02, 1.9)], 3e-3: [(0.47, 0.01, 2.0), (0.48, 0.02, 1.8)]},
        "pre/ssl": {1e-3: [(0.44, 0.60, 2.0), (0.43, 0.40, 1.9)], 3e-3: [(0.38, 0.09, 2.2), (0.36, 0.03, 2.1)]},
        "pre/ssl-ctl": {1e-3: [(0.46, 0.02, 2.0), (0.46, 0.02, 1.9)], 3e-3: [(0.43, 0.01, 2.0), (0.42, 0.02, 2.0)]},
    }
    for src, by_lr in cleaning.items():
        for lr, epochs in by_lr.items():
            acc0, asr0 = start[src]
            make_run(tmp_path, f"clean/{src.split('/')[1]}/cleanclip-{lr:g}", evals=[(acc0, asr0, 2.5), *epochs],
                     objective=(1.0, 1.0), source=src, defense="cleanclip", lr=lr)
    return tmp_path


def test_collect_links_cleaning_runs_to_their_sources(runs):
    by_name = {r.name: r for r in collect_runs(runs)}
    run = by_name["clean/ssl-ctl/cleanclip-0.003"]
    assert run.kind == "clean" and run.method == "cleanclip" and run.source.name == "pre/ssl-ctl"
    # The cleaning run's own objective is MMCL+SSL; what it is grouped by is its source's objective.
    assert run.objective == "MMCL+SSL" and run.root_objective == "MMCL+SSL" and not run.poisoned
    assert by_name["clean/mmcl/cleanclip-0.001"].root_objective == "MMCL"
    assert by_name["clean/mmcl/cleanclip-0.001"].poisoned
    assert by_name["clean/mmcl/cleanclip-0.001"].start["zeroshot_top1"] == 0.50


def test_collect_finds_sources_of_a_moved_runs_folder(runs, tmp_path_factory):
    moved = tmp_path_factory.mktemp("moved") / "runs"
    runs.rename(moved)  # init.checkpoint still names the old absolute location
    by_name = {r.name: r for r in collect_runs(moved)}
    assert by_name["clean/mmcl/cleanclip-0.001"].source.name == "pre/mmcl"


def test_selection_rules_against_hand_computed_answers(runs):
    groups = {g.objective: g.seeds[0] for g in analyse(collect_runs(runs))}
    mmcl, ssl = groups["MMCL"], groups["MMCL+SSL"]
    # MMCL cleaned: candidates (acc, asr) = (.48,.30) (.47,.08) (.44,.04) (.46,.01); epoch 0 never counts.
    assert mmcl.best[0.10].point.acc == 0.47 and mmcl.best[0.10].point.epoch == 2
    assert mmcl.best[0.05].point.acc == 0.46 and mmcl.best[0.01].point.acc == 0.46
    assert mmcl.best[0.10].delta == pytest.approx(-0.03)
    # Its control (same config, un-poisoned source, same epoch 2 at lr 1e-3): 0.50 - 0.52.
    assert mmcl.best[0.10].control_delta == pytest.approx(-0.02)
    # The defender takes the lowest validation loss, 1.8 (lr 3e-3, epoch 2), without looking at ASR.
    assert (mmcl.defender.point.acc, mmcl.defender.point.asr, mmcl.defender.point.val_loss) == (0.46, 0.01, 1.8)
    assert [(p.asr, p.acc) for p in mmcl.front] == [(0.01, 0.46), (0.08, 0.47), (0.30, 0.48)]
    # MMCL+SSL cleaned: only lr 3e-3 gets below 10%; nothing reaches 1%.
    assert ssl.best[0.10].point.acc == 0.38 and ssl.best[0.05].point.acc == 0.36 and ssl.best[0.01] is None
    assert ssl.best[0.10].delta == pytest.approx(-0.07)
    assert ssl.min_asr == 0.03 and ssl.runs == 2


def test_verdict_reports_the_papers_effect_when_it_is_there(runs):
    text = verdict(analyse(collect_runs(runs)))
    assert "MMCL pre-training: the poisoned model has 50.0% accuracy and 90.0% ASR" in text
    # 7 points lost for MMCL+SSL against 3 for MMCL: a 4-point gap, above the 2-point noise bound.
    assert "cost the MMCL+SSL model 4.0 points more accuracy" in text


def test_write_report_renders_tables_plots_and_html(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report = write_report(runs, out)
    html = report.html_path.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert html.count("data:image/png;base64,") == 4 and "paper&#x27;s effect appears" in html
    for name in ("tradeoff", "pareto", "trajectories", "pretraining"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["pretrain_objective"], r["method"]) for r in rows] == [("MMCL", "cleanclip"), ("MMCL+SSL", "cleanclip")]
    assert float(rows[0]["asr10_acc"]) == 0.47 and rows[0]["asr10_run"] == "clean/mmcl/cleanclip-0.001"
    index = list(csv.DictReader((out / "results.csv").open()))
    assert len(index) == 4 * 2 + 8 * 3  # every evaluation of every run, once
    assert "| MMCL+SSL | CleanCLIP (MMCL+SSL) |" in (out / "summary.md").read_text()
    assert "MMCL+SSL" in report.headline and "not reached" not in report.headline.splitlines()[2]


def test_multi_seed_tables_show_mean_and_spread(tmp_path):
    for seed, (acc, cost) in enumerate([(0.50, 0.02), (0.54, 0.04)]):
        make_run(tmp_path, f"pre/s{seed}", evals=[(0.1, 0.0, None), (acc, 0.9, None)], poison=0.1, seed=seed)
        make_run(tmp_path, f"clean/s{seed}", evals=[(acc, 0.9, 2.0), (acc - cost, 0.05, 1.0)], objective=(1.0, 1.0),
                 source=f"pre/s{seed}", defense="cleanclip", seed=seed)
    report = write_report(tmp_path)
    row = next(line for line in report.summary_md.splitlines() if line.startswith("| MMCL |"))
    # Best accuracy at ASR <= 10%: 0.48 and 0.50 -> 49.0 ± 1.4, reached in both seeds.
    assert "49.0 ± 1.4 (2/2 seeds)" in row
    assert "-3.0 ± 1.4" in row


def test_empty_folder_is_a_clear_error(tmp_path):
    from clipbackdoor.registry import ConfigError

    with pytest.raises(ConfigError, match="no run directories"):
        write_report(tmp_path)


def test_damaged_metric_lines_and_configs_are_skipped_counted_and_warned_about(runs, tmp_path_factory, caplog):
    # A line damaged by hand or by the disk, a torn tail of a killed run and a run directory whose config
    # cannot be read: the report is written from everything else and says what it left out.
    before = verdict(analyse(collect_runs(runs)))
    metrics = runs / "clean" / "mmcl" / "cleanclip-0.001" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    edited = json.dumps({**json.loads(lines[1]), "asr_top1": None})  # a value edited into nonsense
    metrics.write_text("\n".join([lines[0], "garbage", *lines[1:], edited]) + "\n" + '{"kind": "eval", "ep')
    bad = make_run(runs, "clean/junk", evals=[(0.1, 0.1, None)])
    (bad / "config.yaml").write_bytes(b"seed: !!python/object/apply:os.system [echo]\n")
    odd = make_run(runs, "clean/odd", evals=[(0.1, 0.1, None)])
    (odd / "config.yaml").write_bytes(b"train: 5\ninit: {checkpoint: x}\n")
    problems = []
    assert {r.name for r in collect_runs(runs, problems)} == {r.name for r in collect_runs(runs)}
    assert verdict(analyse(collect_runs(runs))) == before
    assert any("cleanclip-0.001/metrics.jsonl: skipped 2 unreadable line(s)" in p for p in problems)
    assert sum("unreadable config.yaml" in p for p in problems) == 2
    report = write_report(runs, tmp_path_factory.mktemp("out"))
    assert len(report.problems) == 3 and "skipped 2 unreadable line(s)" in report.html_path.read_text()
    assert "unreadable config.yaml" in caplog.text
