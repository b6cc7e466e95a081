"""The package as users get it: a wheel built by `pip wheel .`, installed into a fresh virtual environment
outside the source tree, runs the quick demo. What the source checkout's editable install cannot show: that
every config, sweep spec, model config and asset the demo reads is inside the wheel.

Slow (a fresh environment installs torch and the rest from the package cache, then the demo trains):
`pytest -m slow tests/scripts/test_wheel.py`.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, timeout: int) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_a_wheel_installs_into_a_fresh_environment_and_runs_the_quick_demo(tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], tmp_path, 600)
    (wheel,) = wheels.glob("clipbackdoor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for packaged in ("clipbackdoor/configs/sweeps/demo-quick.yaml", "clipbackdoor/configs/models/tiny-clip.json",
                     "clipbackdoor/configs/experiments/paper/clean-cleanclip.yaml"):
        assert packaged in names, packaged

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)], tmp_path, 1200)
    # Run from outside the checkout, so nothing can be imported from the source tree by accident.
    where = _run([str(python), "-c", "import clipbackdoor; print(clipbackdoor.__file__)"], tmp_path, 120)
    assert str(env_dir) in where and str(ROOT) not in where
    version = _run([str(env_dir / "bin" / "clipbackdoor"), "--version"], tmp_path, 120)
    assert version.strip().startswith("clipbackdoor ")

    out = _run([str(env_dir / "bin" / "clipbackdoor"), "demo", "--quick", "--out", str(tmp_path / "demo")],
               tmp_path, 1800)
    assert (tmp_path / "demo" / "report.html").is_file()
    assert "Does CleanCLIP remove the backdoor?" in out
