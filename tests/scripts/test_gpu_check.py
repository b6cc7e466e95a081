"""scripts/gpu_check.sh: its options, and (slow) the whole check at CPU size (--tiny)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
PARTS = ["environment", "data", "pretrain-mmcl", "pretrain-mmcl-ssl", "clean-cleanclip", "evaluate", "ddp-2gpu",
         "demo-quick"]
# Parts whose throughput cell must hold a number: samples/s of training, images/s of evaluation.
MEASURED = {"pretrain-mmcl", "pretrain-mmcl-ssl", "clean-cleanclip", "evaluate"}


def _env() -> dict[str, str]:
    """The environment of the script: the interpreter running these tests, unless it is the repository's
    .venv, which the script finds by itself (the way a person runs it)."""
    env = dict(os.environ)
    venv_python = ROOT / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.executable).absolute() == venv_python.absolute():
        env.pop("PYTHON", None)
    else:
        env["PYTHON"] = sys.executable
    return env


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=ROOT)


def test_help_exits_0_and_lists_the_options():
    proc = run_script("--help", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: bash scripts/gpu_check.sh")
    for option in ("--out", "--tiny", "--device", "--timeout", "--skip-demo"):
        assert option in proc.stdout


@pytest.mark.parametrize("args, says", [
    (["--no-such-option"], "unknown option '--no-such-option'"),
    (["--timeout", "soon"], "--timeout wants whole seconds"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
    (["--out"], "--out needs a value"),
])
def test_bad_usage_exits_2_with_one_line(args, says):
    proc = run_script(*args, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0] and "--help" in lines[0], proc.stderr


def test_no_cuda_without_tiny_says_so(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_script("--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu_check.sh: no CUDA device: use --tiny for a CPU check"
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_check_is_never_cleared(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = run_script("--tiny", "--device", "cpu", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert "not empty" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]


@pytest.mark.slow
def test_tiny_check_passes_every_part(tmp_path):
    out = tmp_path / "gpu_check"
    proc = run_script("--tiny", "--out", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    with open(out / "summary.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["part"] for r in rows] == PARTS
    for row in rows:
        # Two GPUs run the DDP part even at --tiny; anywhere else it is skipped with its reason.
        allowed = {"PASS", "SKIP"} if row["part"] == "ddp-2gpu" else {"PASS"}
        assert row["status"] in allowed, row
        assert (out / row["log"]).is_file(), row
        if row["part"] in MEASURED or row["throughput"] != "-":
            assert float(row["throughput"]) > 0, row
            assert row["unit"] in {"samples/s", "images/s", "pairs/s"}, row
    assert {r["part"]: r["unit"] for r in rows if r["part"] in MEASURED} == {
        "pretrain-mmcl": "samples/s", "pretrain-mmcl-ssl": "samples/s", "clean-cleanclip": "samples/s",
        "evaluate": "images/s"}
    summary = (out / "summary.md").read_text()
    assert all(f"| {part} " in summary for part in PARTS)
    environment = (out / "environment.txt").read_text()
    assert "torch" in environment and "CUDA available" in environment
    # The MMCL+SSL run read the CSV with loader workers (the configuration that once crashed).
    config = (out / "runs" / "mmcl-ssl" / "config.yaml").read_text()
    assert "name: csv" in config and "num_workers: 2" in config and "inmodal_weight: 1.0" in config
    assert (out / "demo" / "report.html").is_file()
