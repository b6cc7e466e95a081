"""The report and attacks: trigger galleries embedded once per attack, and cleaning runs on poisoned cleaning
data kept apart from those on clean data (with controls matched on the same number of poisons)."""

import base64
import csv
import json

import pytest
import yaml

from clipbackdoor.reporting.analysis import analyse
from clipbackdoor.reporting.collect import collect_runs
from clipbackdoor.reporting.report import verdict, write_report

BADNET = {"name": "badnet", "target": "banana", "patch_size": 3}


def make_run(root, name, *, evals, poison=0.0, source=None, cleaning_poisons=0, attack=BADNET):
    """A run directory as training writes it; ``evals`` are (acc, asr, val_loss) from epoch 0. A cleaning run
    with ``cleaning_poisons`` has them in its config's budget and in its own poison_manifest.json."""
    run = root / name
    run.mkdir(parents=True)
    budget = cleaning_poisons if source else poison
    config = {"seed": 0, "objective": {"clip_weight": 1.0, "inmodal_weight": 1.0 if source else 0.0},
              "attack": attack, "poison": {"budget": budget, "manifest": None},
              "defense": {"name": "cleanclip"} if source else None,
              "init": {"checkpoint": str(root / source) if source else None}, "train": {"lr": 1e-3}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if budget:
        (run / "poison_manifest.json").write_text(json.dumps({"num_poisoned": cleaning_poisons or 100}))
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"kind": "eval", "epoch": e, "zeroshot_top1": acc, "asr_top1": asr, "clean_target_rate": 0.02,
                    "val_loss": vl}) + "\n" for e, (acc, asr, vl) in enumerate(evals)))
    (run / "summary.json").write_text("{}")
    return run


@pytest.fixture
def runs(tmp_path):
    """A poisoned MMCL model and its control, each cleaned by CleanCLIP on clean data and on data with 5 poisons."""
    make_run(tmp_path, "pre/mmcl", evals=[(0.1, 0.0, 3.0), (0.50, 0.90, 3.0)], poison=0.1)
    make_run(tmp_path, "pre/ctl", evals=[(0.1, 0.0, 3.0), (0.52, 0.02, 3.0)])
    cleaning = {  # (source, k): epoch 1 and 2 (acc, asr, val_loss)
        ("mmcl", 0): [(0.48, 0.30, 2.0), (0.48, 0.05, 1.9)],
        ("ctl", 0): [(0.51, 0.02, 2.0), (0.51, 0.02, 1.9)],
        ("mmcl", 5): [(0.49, 0.60, 2.0), (0.45, 0.08, 1.8)],
        ("ctl", 5): [(0.50, 0.02, 2.0), (0.47, 0.02, 1.9)],
    }
    for (src, k), epochs in cleaning.items():
        start = (0.50, 0.90, 2.5) if src == "mmcl" else (0.52, 0.02, 2.5)
        make_run(tmp_path, f"clean/{src}/k-{k}", evals=[start, *epochs], source=f"pre/{src}", cleaning_poisons=k)
    return tmp_path


def test_cleaning_poisons_form_their_own_group_with_their_own_controls(runs):
    by_name = {r.name: r for r in collect_runs(runs)}
    assert by_name["clean/mmcl/k-5"].cleaning_poisons == 5 and by_name["clean/mmcl/k-0"].cleaning_poisons == 0
    assert by_name["pre/mmcl"].cleaning_poisons == 0 and by_name["clean/mmcl/k-5"].poisoned

    groups = analyse(collect_runs(runs))
    assert [(g.objective, g.method, g.poisons) for g in groups] == [("MMCL", "cleanclip", 0), ("MMCL", "cleanclip", 5)]
    clean_set, poisoned_set = groups[0].seeds[0], groups[1].seeds[0]
    assert clean_set.runs == 1 and poisoned_set.runs == 1  # never pooled
    # Pooled, the best accuracy at ASR <= 10% would be 0.48 for both.
    assert clean_set.best[0.10].point.acc == 0.48 and poisoned_set.best[0.10].point.acc == 0.45
    # Each is paired with the control cleaned on the same data: epoch 2 at k=0 is 0.51 - 0.52, at k=5 0.47 - 0.52.
    assert clean_set.best[0.10].control_delta == pytest.approx(-0.01)
    assert poisoned_set.best[0.10].control_delta == pytest.approx(-0.05)


def test_verdict_uses_clean_cleaning_data_and_reports_the_poisoned_sets_apart(runs):
    text = verdict(analyse(collect_runs(runs)))
    assert "the best such checkpoint has 48.0% accuracy, 2.0 points lower than the poisoned model's" in text
    assert ("Poisoned cleaning data, MMCL pre-training: with 0 / 5 poisons in the cleaning data, CleanCLIP's lowest "
            "ASR was 5.0% / 8.0% and its best accuracy at ASR ≤ 10% 48.0% / 45.0%.") in text


def test_tables_and_files_carry_the_number_of_cleaning_poisons(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report = write_report(runs, out)
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["method"], r["cleaning_poisons"], r["asr10_acc"]) for r in summary] == [
        ("cleanclip", "0", "0.48"), ("cleanclip", "5", "0.45")]
    assert {r["cleaning_poisons"] for r in csv.DictReader((out / "pareto.csv").open())} == {"0", "5"}
    index = {r["run"]: r["cleaning_poisons"] for r in csv.DictReader((out / "results.csv").open())}
    assert index["clean/ctl/k-5"] == "5" and index["clean/ctl/k-0"] == "0" and index["pre/mmcl"] == "0"
    md = (out / "summary.md").read_text()
    assert "| MMCL | CleanCLIP (MMCL+SSL) |" in md
    assert "| MMCL | CleanCLIP (MMCL+SSL), 5 poisons in cleaning data |" in md
    assert "5 poisons in cleaning data" in report.headline
    assert "Triggers" not in report.html_path.read_text()  # no run wrote a gallery


def test_report_embeds_one_trigger_gallery_per_attack(runs, tmp_path_factory):
    from clipbackdoor.data.datasets import SyntheticPairs
    from clipbackdoor.poison import Poisoner, create_manifest
    from clipbackdoor.poison.badnet import BadNet
    from clipbackdoor.poison.gallery import GALLERY_NAME, write_gallery

    pairs = SyntheticPairs(num_samples=32, image_size=32)
    attack = BadNet(patch_size=3)
    write_gallery(pairs, Poisoner(create_manifest(pairs, attack, 4, seed=0), attack), runs / "pre/mmcl" / GALLERY_NAME)
    # A second run with the same attack shows nothing new; one with another attack adds its own gallery.
    for name, attack_section, budget, data in (("pre/mmcl-seed1", BADNET, 0.1, b"same attack"),
                                               ("pre/corner", {**BADNET, "location": "top_left"}, 0.1, None),
                                               ("pre/ctl-gallery", BADNET, 0.0, b"control: never shown")):
        run = make_run(runs, name, evals=[(0.1, 0.0, 3.0), (0.5, 0.9, 3.0)], poison=budget, attack=attack_section)
        (run / GALLERY_NAME).write_bytes(data or (runs / "pre/mmcl" / GALLERY_NAME).read_bytes())
    page = write_report(runs, tmp_path_factory.mktemp("report")).html_path.read_text()

    assert "<h2>Triggers</h2>" in page
    gallery = base64.b64encode((runs / "pre/mmcl" / GALLERY_NAME).read_bytes()).decode()
    assert page.count(gallery) == 2  # pre/mmcl (badnet) and pre/corner (the same bytes, another attack)
    assert "badnet (from pre/mmcl)</figcaption>" in page and "badnet (from pre/corner)</figcaption>" in page
    assert base64.b64encode(b"same attack").decode() not in page
    assert base64.b64encode(b"control: never shown").decode() not in page
