"""The command line helps: --version, suggestions for typos, a fast grouped `list`."""

import subprocess
import sys

import pytest

from clipbackdoor import __version__
from clipbackdoor.cli import main
from clipbackdoor.defenses import DEFENSES
from clipbackdoor.poison import ATTACKS


def _exit_and_err(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr()


def test_version(capsys):
    code, out = _exit_and_err(capsys, ["--version"])
    assert code == 0
    assert out.out.strip() == f"clipbackdoor {__version__}"
    assert __version__ != "0+unknown"  # read from the installed package's metadata


@pytest.mark.parametrize(("argv", "suggestion"), [
    (["demp"], "did you mean 'demo'?"),
    (["list", "atacks"], "did you mean 'attacks'?"),
    (["sweep", "demo", "--out", "x", "--wrokers", "2"], "did you mean '--workers'?"),
    (["clean", "--from", "x", "--out", "y", "--defnese", "cleanclip"], "did you mean '--defense'?"),
])
def test_mistyped_commands_choices_and_options_get_a_suggestion(capsys, argv, suggestion):
    code, out = _exit_and_err(capsys, argv)
    assert code == 2
    last = out.err.strip().splitlines()[-1]
    assert suggestion in last, last


def test_a_word_nothing_resembles_gets_no_suggestion(capsys):
    code, out = _exit_and_err(capsys, ["zzzzzz"])
    assert code == 2 and "did you mean" not in out.err


@pytest.mark.parametrize(("override", "suggestion"), [
    ("train.epochz=3", "did you mean 'train.epochs'?"),
    ("trian.epochs=3", "did you mean 'train'?"),
    ("objective.clip_wieght=1", "did you mean 'clip_weight'"),
    ("attack.name=badnett", "did you mean 'badnet'"),
    ("defense.name=cleanclp", "did you mean 'cleanclip'?"),
    ("model.name=tiny-clp", "did you mean 'tiny-clip'"),
])
def test_mistyped_config_keys_and_names_get_a_suggestion(tmp_path, capsys, override, suggestion):
    assert main(["pretrain", "--out", str(tmp_path / "run"), "train.epochs=1", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and suggestion in err, err


def test_list_is_grouped_with_a_line_per_entry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    groups = [line[:-1] for line in out.splitlines() if line and not line.startswith(" ")]
    assert groups == ["models", "attacks", "objectives", "defenses", "datasets", "eval-datasets", "configs",
                      "sweeps"]
    lines = out.splitlines()
    for name in [*DEFENSES.names(), *ATTACKS.names()]:
        line = next(line for line in lines if line.strip().split(" ")[0] == name)
        assert len(line.split()) > 2, f"{name} has no description: {line!r}"
    # The registry's words, not a base class's: every defense says something of its own.
    assert len({DEFENSES.summary(n) for n in DEFENSES.names()}) == len(DEFENSES.names())
    assert "ViT-B-32" not in out and "--open-clip" in out


def test_list_open_clip_names_only_when_asked(capsys):
    assert main(["list", "models", "--names", "--open-clip"]) == 0
    names = capsys.readouterr().out.split()
    assert "tiny-clip" in names and "ViT-B-32" in names and "RN50" in names


def test_list_never_imports_open_clip():
    # The point of the fast listing: a subprocess, since this test process has open_clip loaded already.
    code = ("import sys; from clipbackdoor.cli import main; main(['list']); "
            "sys.exit(3 if 'open_clip' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_list_into_a_closed_pipe_is_not_an_error():
    cmd = f"{sys.executable} -m clipbackdoor list | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
