"""benchmarks/gpu_throughput.sh: its settings, the summary's verdicts, and the whole run at CPU size."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_throughput.sh"
BENCH = ROOT / "benchmarks" / "bench_throughput.py"
# The files the run leaves in OUT: all of them come back from a lent GPU machine (at most 8, no folders).
FILES = {"summary.md", "results.json", "profile_model.txt", "profile_loader.txt", "profile_eval.txt", "log.txt"}
FIGURES = ["mmcl_csv", "mmcl_shards", "mmcl_ssl_csv", "cleanclip_csv", "epoch", "epoch_eval", "run", "eval_fp32",
           "eval_bf16", "loader_csv", "loader_shards", "model_mmcl", "model_mmcl_fused", "model_mmcl_ssl"]
TINY = {"DEVICE": "cpu", "MODEL": "tiny-clip", "BATCH": "32", "IMAGES": "256", "STEPS": "2", "WARMUP": "1",
        "WORKERS": "2", "EVAL_IMAGES": "200", "EVAL_BATCH": "100", "RUN_EVAL_IMAGES": "100", "FIT_BATCHES": "64"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"OUT", "WORK", "WHEELS", "DEVICE", *TINY}}
    venv_python = ROOT / ".venv" / "bin" / "python"
    if not (venv_python.exists() and Path(sys.executable).absolute() == venv_python.absolute()):
        env["PYTHON"] = sys.executable
    return {**env, **extra}


def run_script(*args: str, timeout: float = 120, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(**settings), cwd=ROOT)


@pytest.mark.parametrize("settings, says", [
    ({"BATCH": "many"}, "BATCH must be a whole number"),
    ({"STEPS": "0"}, "STEPS must be > 0"),
    ({"IMAGES": "64", "BATCH": "32", "WORKERS": "8"}, "fewer than WORKERS=8"),
    ({"FIT_BATCHES": "512,1024"}, "FIT_BATCHES must be whole numbers"),
])
def test_bad_settings_exit_2_with_one_line(tmp_path, settings, says):
    proc = run_script(timeout=30, OUT=str(tmp_path / "out"), **settings)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1 and says in proc.stderr, proc.stderr


def test_arguments_other_than_prepare_are_refused(tmp_path):
    proc = run_script("--tiny", timeout=30, OUT=str(tmp_path / "out"))
    assert proc.returncode == 2 and "--prepare" in proc.stderr


def _results(value: float, fits: bool | None = True) -> dict:
    """results.json as `measure` writes it, every figure at ``value``, on the issue's setup."""
    figures = {key: {"value": value, "unit": "pairs/s", "peak_gib": 12.5, "status": "measured", "detail": "d"}
               for key in FIGURES}
    for key in ("fit_512_mmcl", "fit_512_mmcl_ssl"):
        figures[key] = {"value": value, "unit": "pairs/s", "peak_gib": 40.0, "status": "measured", "fits": fits}
    return {
        "setup": {"model": "RN50", "image_size": 224, "batch": 256, "precision": "bf16", "device": "cuda",
                  "workers": 8, "steps": 40, "warmup": 5, "images": 16384, "channels_last": True,
                  "eval_images": 10000, "eval_batch": 500, "fit_batches": [512], "patch_size": 16,
                  "issue_setup": True},
        "environment": {"date": "d", "gpu": "NVIDIA H100", "torch": "2", "cuda": "13", "cudnn": 9, "cpus": 16,
                        "commit": "abc"},
        "parts": {"mmcl_csv": {"status": "ok", "seconds": 1.0}},
        "figures": figures,
    }


def _rows(summary: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in summary.splitlines() if line.startswith("| ")]
    return {r[0]: r[1:] for r in rows[1:]}


@pytest.mark.parametrize("value, verdict", [(12000.0, "yes"), (1500.0, "no")])
def test_summary_says_whether_each_target_is_met(tmp_path, value, verdict):
    results = _results(value)
    results["figures"]["epoch"]["value"] = value * (0.85 if verdict == "yes" else 0.5)
    (tmp_path / "results.json").write_text(json.dumps(results))
    proc = subprocess.run([sys.executable, str(BENCH), "summary", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = _rows((tmp_path / "summary.md").read_text())
    assert proc.stdout == (tmp_path / "summary.md").read_text()
    assert len(rows) == len(FIGURES) + 2
    targets = {"MMCL, steady, CSV of JPEGs": (">= 4,000", "2,093"), "MMCL+SSL, steady, CSV": (">= 2,000", "crashed"),
               "zero-shot + ASR evaluation as runs evaluate (fp32, TF32)": (">= 10,000", "2,482")}
    for what, (target, old) in targets.items():
        assert rows[what][2:] == [target, old, verdict], rows[what]
    epoch = next(v for k, v in rows.items() if k.startswith("whole epoch, "))
    assert epoch[0].endswith(f"({85 if verdict == 'yes' else 50}% of steady)") and epoch[3:] == ["967", verdict]
    assert rows["model alone, MMCL (one batch on the device)"][4] == "-"  # no target
    assert rows["batch 512, MMCL: two steps (rate of the second)"][1:] == ["40.00 GiB", "fits on an 80 GB card", "-",
                                                                           "yes"]


def test_summary_of_a_batch_that_ran_out_of_memory(tmp_path):
    results = _results(5000.0, fits=False)
    results["figures"]["fit_512_mmcl_ssl"].update(value=None, peak_gib=None, status="out of memory")
    (tmp_path / "results.json").write_text(json.dumps(results))
    subprocess.run([sys.executable, str(BENCH), "summary", "--out", str(tmp_path)], check=True, capture_output=True,
                   timeout=60)
    rows = _rows((tmp_path / "summary.md").read_text())
    assert rows["batch 512, MMCL+SSL: two steps (rate of the second)"] == [
        "out of memory", "-", "fits on an 80 GB card", "-", "no"]


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_figure(tmp_path):
    out = tmp_path / "out"
    proc = run_script(timeout=300, OUT=str(out), WORK=str(tmp_path / "work"), **TINY)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == FILES  # files only, no folders
    assert not (tmp_path / "work").exists()  # the scratch folder is removed
    results = json.loads((out / "results.json").read_text())
    assert all(part["status"] == "ok" for part in results["parts"].values()), results["parts"]
    assert len(results["parts"]) == 7
    figures = results["figures"]
    assert set(figures) == {*FIGURES, "fit_64_mmcl", "fit_64_mmcl_ssl"}
    for key, figure in figures.items():
        assert figure["status"] == "measured", (key, figure)
        assert isinstance(figure["value"], float) and math.isfinite(figure["value"]) and figure["value"] > 0, key
        assert figure["peak_gib"] == "n/a", key  # no GPU memory on the CPU
    assert results["setup"]["issue_setup"] is False and results["setup"]["precision"] == "fp32"
    summary = (out / "summary.md").read_text()
    rows = _rows(summary)
    assert len(rows) == len(figures)
    for what, cells in rows.items():
        number = re.match(r"([\d,]+(?:\.\d+)?) (pairs|images)/s", cells[0])
        assert number and math.isfinite(float(number.group(1).replace(",", ""))), (what, cells)
        assert cells[1] == "n/a" and cells[4] == "n/a", (what, cells)  # peak memory; "meets" off the setup
    assert "2,093" in summary and "967" in summary and "2,482" in summary and "crashed" in summary
    assert summary in proc.stdout  # the table is printed too
    assert "aten::" in (out / "profile_model.txt").read_text()
    loader = (out / "profile_loader.txt").read_text()
    assert loader.count("loader alone in the main process") == 3 and "cProfile" in loader
    assert "aten::" in (out / "profile_eval.txt").read_text()
    assert "== pretrain_run" in (out / "log.txt").read_text()
