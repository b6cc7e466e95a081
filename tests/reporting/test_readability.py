"""A report a reader grasps at a glance: the answer first, one name per method in tables and figures alike, a
chance-accuracy line, and differences worded with their direction. Figures are read back from the matplotlib
objects the report itself builds (``figures.report_figures``), not from the PNGs."""

from __future__ import annotations

import re

import pytest
import yaml
from run_dirs import make_run

from clipbackdoor.reporting import figures, plots
from clipbackdoor.reporting.analysis import analyse
from clipbackdoor.reporting.chance import chance_accuracy
from clipbackdoor.reporting.collect import collect_runs
from clipbackdoor.reporting.labels import change_text
from clipbackdoor.reporting.report import write_report
from clipbackdoor.reporting.tables import SUMMARY_HEADERS, config_table, pretraining_table, summary_table
from clipbackdoor.reporting.verdict import answer, verdict

SYNTHETIC_EVAL = {"name": "synthetic", "split": "test", "num_samples": 20}
DEFENSES = ("cleanclip", "mmcl", "ssl", "shrink_perturb")  # shrink_perturb: not in labels.METHOD_LABELS
# (acc, asr, val_loss) after epochs 1 and 2 of CleanCLIP, per source and learning rate. The MMCL model gets
# to ASR 8% at lr 1e-3 (accuracy 50 -> 47, its control 52 -> 50); the MMCL+SSL model never gets under 13%.
CLEANING = {
    "mmcl": {1e-3: [(0.48, 0.30, 2.0), (0.47, 0.08, 1.9)], 3e-3: [(0.44, 0.04, 2.1), (0.46, 0.01, 1.8)]},
    "mmcl-ctl": {1e-3: [(0.51, 0.02, 2.0), (0.50, 0.02, 1.9)], 3e-3: [(0.47, 0.01, 2.0), (0.48, 0.02, 1.8)]},
    "ssl": {1e-3: [(0.44, 0.60, 2.0), (0.43, 0.40, 1.9)], 3e-3: [(0.38, 0.20, 2.2), (0.36, 0.13, 2.1)]},
    "ssl-ctl": {1e-3: [(0.46, 0.02, 2.0), (0.46, 0.02, 1.9)], 3e-3: [(0.43, 0.01, 2.0), (0.42, 0.02, 2.0)]},
}
STARTS = {"mmcl": (0.50, 0.90), "mmcl-ctl": (0.52, 0.02), "ssl": (0.45, 0.95), "ssl-ctl": (0.47, 0.03)}
EXPECTED_ANSWER = (
    "Does CleanCLIP remove the backdoor? From the MMCL model, yes: ASR 90.0% → 8.0%, accuracy 3.0 points lower "
    "than before cleaning, against 2.0 points lower for its un-poisoned control cleaned the same way; from the "
    "MMCL+SSL model, no: ASR 95.0% → 13.0% at best, above the 10% bound (seed 0).")


def _set_eval(run, section) -> None:
    path = run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["data"] = {"eval": section}
    path.write_text(yaml.safe_dump(config))


def _sweep(root, eval_section=SYNTHETIC_EVAL):
    """MMCL and MMCL+SSL models, poisoned and controls, each cleaned by four defenses at two learning rates;
    every defense but CleanCLIP costs one more point per place in DEFENSES, so that methods differ."""
    for name, objective in (("mmcl", (1.0, 0.0)), ("ssl", (1.0, 1.0))):
        for src in (name, f"{name}-ctl"):
            acc, asr = STARTS[src]
            _set_eval(make_run(root, f"pre/{src}", evals=[(0.1, 0.0, None), (acc, asr, None)], objective=objective,
                               poison=0.0 if src.endswith("ctl") else 0.1), eval_section)
    for src, by_lr in CLEANING.items():
        for i, defense in enumerate(DEFENSES):
            for lr, epochs in by_lr.items():
                shifted = [(acc - 0.01 * i, asr, loss) for acc, asr, loss in epochs]
                run = make_run(root, f"clean/{src}/{defense}-{lr:g}", evals=[(*STARTS[src], 2.5), *shifted],
                               objective=(1.0, 1.0), source=f"pre/{src}", defense=defense, lr=lr)
                _set_eval(run, eval_section)
    return root


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    return _sweep(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def report(sweep_dir, tmp_path_factory):
    return write_report(sweep_dir, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def built(sweep_dir):
    """The runs, their groups and the report's figures, built by the functions the report uses."""
    runs = collect_runs(sweep_dir)
    groups = analyse(runs)
    return runs, groups, {f.name: f for f in figures.report_figures(groups, runs)}


def _table_names(runs, groups) -> tuple[set[str], set[str]]:
    """The names the tables give methods and objectives."""
    _, rows = summary_table(groups)
    _, config_rows = config_table(groups)
    _, pre_rows = pretraining_table(runs)
    methods = {r[1] for r in rows} | {r[1] for r in config_rows}
    objectives = {r[0] for r in rows} | {r[0] for r in config_rows} | {r[1] for r in pre_rows}
    return methods, objectives


def _classify(text: str, methods: set[str], objectives: set[str], lrs: set[float]) -> str:
    """What a legend entry is: "method"/"objective" (a name the tables use), "encoding" (what a colour, shape,
    size or line means), or "unknown" (a name no table uses, or a stray label)."""
    if text in plots.REFERENCE_LABELS or re.fullmatch(r"chance accuracy \(1/\d+ classes\)", text):
        return "encoding"
    if (m := re.fullmatch(r"lr (\S+)", text)) and float(m[1]) in lrs or re.fullmatch(r"epoch \d+", text):
        return "encoding"
    if text in methods:
        return "method"
    # A trajectory names its run: the method as tables name it, then the run's settings (lr first).
    if text.split(", lr ", 1)[0] in methods and ", lr " in text:
        return "method"
    if (m := re.fullmatch(r"(.+), (poisoned|control)", text)) and m[1] in objectives:
        return "objective"
    return "unknown"


def test_every_legend_and_annotation_names_what_the_tables_name(built):
    runs, groups, figs = built
    methods, objectives = _table_names(runs, groups)
    assert "shrink_perturb" in methods and "MMCL only" in methods  # a plug-in defense has a label too
    lrs = {r.lr for r in runs}
    for name, f in figs.items():
        legend = [t.get_text() for lg in f.figure.legends for t in lg.get_texts() if t.get_text()]
        kinds = {text: _classify(text, methods, objectives, lrs) for text in legend}
        assert "unknown" not in kinds.values(), (name, {t for t, k in kinds.items() if k == "unknown"})
        assert {"method", "objective"} & set(kinds.values()), name  # names something, not only encodings
        for ax in f.figure.axes:
            # Inside the panels only epoch numbers: names live in the legend, where they cannot overlap.
            assert all(re.fullmatch(r"\d+", t.get_text()) for t in ax.texts), (name, [t.get_text() for t in ax.texts])
            title = ax.get_title()
            if title.startswith("Pre-trained with "):
                assert title.removeprefix("Pre-trained with ") in objectives
    tradeoff = [t.get_text() for lg in figs["tradeoff"].figure.legends for t in lg.get_texts()]
    assert methods <= set(tradeoff)  # every method of the table is in the main figure's legend, by that name


def test_the_chance_line_comes_from_the_evaluation_set(built):
    from clipbackdoor.data.synthetic import CLASSNAMES

    runs, _, figs = built
    chance = 1 / len(CLASSNAMES)
    assert chance_accuracy(runs) == pytest.approx(chance)
    for name in ("tradeoff", "pareto", "trajectories"):
        for ax in figs[name].figure.axes:
            (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("chance accuracy")]
            assert line.get_linestyle() == "--" and line.get_ydata()[0] == pytest.approx(100 * chance)
        assert f"1/{len(CLASSNAMES)} classes" in figs[name].caption


def test_no_chance_line_where_the_evaluation_set_cannot_be_read(tmp_path):
    missing = {"name": "labels_csv", "path": str(tmp_path / "nowhere" / "labels.csv"), "classnames": ["a", "b"]}
    runs = collect_runs(_sweep(tmp_path / "runs", missing))
    assert chance_accuracy(runs) is None
    tradeoff = figures.report_figures(analyse(runs), runs)[0]
    assert "No chance-accuracy line" in tradeoff.caption
    assert not [ln for ax in tradeoff.figure.axes for ln in ax.get_lines() if "chance" in ln.get_label()]


def test_runs_evaluated_on_sets_of_different_sizes_get_no_single_chance_line(tmp_path):
    runs = collect_runs(_sweep(tmp_path))
    runs[0].config["data"]["eval"] = {"name": "labels_csv", "path": str(tmp_path / "x.csv"), "classnames": ["a"]}
    assert chance_accuracy(runs) is None


def test_the_answer_comes_first_with_its_numbers(report):
    paragraphs = report.verdict.split("\n\n")
    assert paragraphs[0] == report.answer == EXPECTED_ANSWER
    html = report.html_path.read_text()
    # The answer is the verdict's first paragraph, and the verdict comes before every table and figure.
    verdict_box = html[html.index('<div class="verdict">'):]
    assert verdict_box.index("<p>") == verdict_box.index("<p>Does CleanCLIP remove the backdoor?")
    assert html.index("Does CleanCLIP remove") < html.index("MMCL pre-training: the poisoned model")
    assert html.index("Does CleanCLIP remove") < html.index("<h2>")


def test_the_console_summary_leads_with_the_answer_then_the_table(report):
    lines = report.summary().splitlines()
    assert lines[0] == EXPECTED_ANSWER and lines[2].startswith("pre-training")
    assert report.summary().count("Does CleanCLIP remove") == 1  # details follow; the answer is not repeated


@pytest.mark.parametrize(("starts", "words"), [
    # Every seed cleaned, and the backdoor learned weakly: both said in the answer.
    (None, "From the MMCL model, yes: ASR 30.0% → 5.0%, accuracy 2.0 points lower than before cleaning (it "
           "learned the backdoor only weakly)"),
    # One seed of two cleaned: named as such, before and after in that seed, and the seeds per objective
    # when the objectives' seeds differ.
    ("partial", "From the MMCL model, in 1 of 2 seeds: ASR 95.0% → 5.0%, accuracy 2.0 points lower than before "
                "cleaning (mean of seeds 0, 1)"),
])
def test_the_answer_names_partial_success_and_weak_backdoors(tmp_path, starts, words):
    seeds = (0, 1) if starts == "partial" else (0,)
    for seed in seeds:
        asr = 0.30 if starts is None else 0.95
        make_run(tmp_path, f"pre/m{seed}", evals=[(0.1, 0.0, None), (0.6, asr, None)], poison=0.1, seed=seed)
        after = 0.05 if seed == 0 else 0.5
        make_run(tmp_path, f"clean/m{seed}", evals=[(0.6, asr, 2.5), (0.58, after, 2.0)], objective=(1.0, 1.0),
                 source=f"pre/m{seed}", defense="cleanclip", seed=seed)
    if starts == "partial":  # an MMCL+SSL model of seed 0 only, so that the objectives' seeds differ
        make_run(tmp_path, "pre/s0", evals=[(0.1, 0.0, None), (0.6, 0.9, None)], objective=(1.0, 1.0), poison=0.1)
        make_run(tmp_path, "clean/s0", evals=[(0.6, 0.9, 2.5), (0.5, 0.5, 2.0)], objective=(1.0, 1.0),
                 source="pre/s0", defense="cleanclip")
    text = answer(analyse(collect_runs(tmp_path)))
    assert text.startswith("Does CleanCLIP remove the backdoor? " + words), text


def test_the_defenders_rule_is_found_where_the_verdict_says(report):
    html = report.html_path.read_text()
    assert "beside" not in report.verdict and "beside" not in html
    assert 'the "defender pick" column of the Cleaning table' in report.verdict
    assert "defender pick" in SUMMARY_HEADERS and "<th>defender pick</th>" in html


def test_differences_in_prose_have_a_direction_not_a_bare_sign(report):
    # "+1.5 points" or "(-4.0 points)" leave the reader to work out who is lower than whom.
    assert not re.search(r"(?<![\w.])[+−-]\d+\.\d+ points", report.verdict), report.verdict
    assert "4.0 points lower than the poisoned model's" not in report.verdict  # 3.0 here, see EXPECTED_ANSWER
    assert "accuracy, 3.0 points lower than the poisoned model's" in report.verdict
    assert change_text(0.015, "the control") == "1.5 points higher than the control"
    assert change_text(-0.015, more="more", less="less") == "1.5 points less"
    assert change_text(0.0001, "the control") == "the same as the control"


def test_a_gap_within_the_noise_says_which_model_lost_more(tmp_path):
    for name, objective, cost in (("m", (1.0, 0.0), 0.02), ("s", (1.0, 1.0), 0.03)):
        make_run(tmp_path, f"pre/{name}", evals=[(0.1, 0.0, None), (0.6, 0.95, None)], objective=objective,
                 poison=0.1)
        make_run(tmp_path, f"clean/{name}", evals=[(0.6, 0.95, 2.5), (0.6 - cost, 0.05, 2.0)], objective=(1.0, 1.0),
                 source=f"pre/{name}", defense="cleanclip")
    text = verdict(analyse(collect_runs(tmp_path)))
    assert ("Cleaning cost the MMCL+SSL model 1.0 points more accuracy than the MMCL model, within the noise "
            "(2.0 points)") in text


def test_the_chance_line_comes_from_the_logged_class_count_without_the_data(tmp_path):
    # Runs evaluated on a set this machine cannot read, whose records say how many classes it had.
    missing = {"name": "labels_csv", "path": str(tmp_path / "nowhere" / "labels.csv"), "classnames": ["a", "b"]}
    runs = collect_runs(_sweep(tmp_path / "runs", missing))
    for run in runs:
        for record in run.evals:
            record["eval_classes"] = 7
    assert chance_accuracy(runs) == pytest.approx(1 / 7)
    runs[0].evals[-1]["eval_classes"] = 5  # runs that disagree get no line
    assert chance_accuracy(runs) is None
