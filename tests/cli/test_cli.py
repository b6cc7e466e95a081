"""The command line end to end on tiny synthetic runs, and its error messages."""

import json

import pytest

from clipbackdoor.cli import main

TINY = ["data.train.num_samples=256", "data.eval.num_samples=100", "train.batch_size=64", "train.epochs=1",
        "train.warmup_steps=1", "train.progress=false", "eval.batch_size=100"]


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("poison", "pretrain", "clean", "evaluate", "list"):
        assert cmd in out


def test_poison_pretrain_clean_evaluate(tmp_path, capsys):
    assert main(["poison", "--config", "mmcl", "--out", str(tmp_path / "poison"), "--export", *TINY]) == 0
    manifest = tmp_path / "poison" / "poison_manifest.json"
    assert json.loads(manifest.read_text())["num_poisoned"] == 13  # 5% of 256
    csv_text = (tmp_path / "poison" / "data" / "poisoned.csv").read_text().splitlines()
    assert csv_text[0] == "image,caption,is_backdoor" and len(csv_text) == 257
    assert sum(line.endswith(",1") for line in csv_text) == 13

    for objective in ("mmcl", "mmcl-ssl"):
        assert main(["pretrain", "--config", objective, "--out", str(tmp_path / objective), *TINY,
                     f"poison.manifest={manifest}"]) == 0
        # The reused manifest is copied into the run directory unchanged.
        assert (tmp_path / objective / "poison_manifest.json").read_text() == manifest.read_text()
    assert main(["clean", "--from", str(tmp_path / "mmcl"), "--defense", "cleanclip", "--out",
                 str(tmp_path / "clean"), "train.epochs=1", "data.train.num_samples=128", "train.progress=false",
                 "train.batch_size=64"]) == 0
    cfg = (tmp_path / "clean" / "config.yaml").read_text()
    assert "cleanclip" in cfg and "inmodal_weight: 1.0" in cfg
    assert main(["evaluate", "--checkpoint", str(tmp_path / "clean"), "--out", str(tmp_path / "eval"),
                 "eval.asr_draws=2"]) == 0
    out = capsys.readouterr().out
    assert "asr_top1_std" in out and "zeroshot_top1" in out
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["final"]["eval_images"] == 100
    record = json.loads((tmp_path / "eval" / "metrics.jsonl").read_text())
    assert record["eval_seconds"] > 0 and record["device"] == "cpu"
    data = json.loads((tmp_path / "clean" / "metrics.jsonl").read_text().splitlines()[0])
    assert data["kind"] == "data" and data["device"] == "cpu"  # what train.device=auto resolved to


def test_unknown_config_key_is_a_clear_error(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path), "train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key(s) train.lrr" in err and "Traceback" not in err


def test_unknown_component_key_names_the_valid_ones(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path), *TINY, "attack.patchsize=4"]) == 2
    err = capsys.readouterr().err
    assert "attack (badnet): unknown key(s) 'patchsize'" in err and "patch_size" in err


def test_missing_csv_image_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("image,caption\nmissing.png,a cat\n")
    tiny = [o for o in TINY if not o.startswith("data.train.")]
    code = main(["pretrain", "--out", str(tmp_path / "run"), *tiny, "data.train.name=csv",
                 f"data.train.path={tmp_path / 'train.csv'}"])
    assert code == 2
    assert "line 2: image file not found" in capsys.readouterr().err


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "badnet" in out and "cleanclip" in out and "tiny-clip" in out and "mmcl-ssl" in out


def test_pretrain_from_a_csv_written_by_the_synthetic_command(tmp_path):
    # The real file-loading path end to end: PNGs and a CleanCLIP-format CSV on disk, opened lazily.
    assert main(["synthetic", "--out", str(tmp_path / "data"), "-n", "128"]) == 0
    tiny = [o for o in TINY if not o.startswith("data.train.")]
    assert main(["pretrain", "--config", "mmcl", "--out", str(tmp_path / "run"), *tiny, "data.train.name=csv",
                 f"data.train.path={tmp_path / 'data' / 'data.csv'}", "poison.budget=8"]) == 0
    manifest = json.loads((tmp_path / "run" / "poison_manifest.json").read_text())
    # Poisoned samples are identified by their image path, so the manifest can be audited against the CSV.
    assert manifest["num_poisoned"] == 8 and all(s["id"].startswith("images/") for s in manifest["samples"])


def test_missing_wordnet_stops_mmcl_ssl_before_training_with_the_install_hint(tmp_path, monkeypatch, capsys):
    import clipbackdoor.data.wordnet as wordnet

    def missing(*args, **kwargs):
        raise wordnet.WordNetNotFound(f"no WordNet corpus found; {wordnet.INSTALL_HINT}")

    monkeypatch.setattr(wordnet, "load_wordnet", missing)
    assert main(["pretrain", "--config", "mmcl-ssl", "--out", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert "apt-get install wordnet-base" in err and "Traceback" not in err
    assert not (tmp_path / "checkpoints").exists()


def test_files_that_are_not_utf8_or_not_folders_are_one_line_errors(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"stages:\n  a: {command: pretrain}\n# caf\xe9\n")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sweep")]) == 2
    config = tmp_path / "config.yaml"
    config.write_bytes(b"seed: 1 # caf\xe9\n")
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    (tmp_path / "afile").write_text("x")
    assert main(["pretrain", "--out", str(tmp_path / "afile"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"clipbackdoor sweep: error: {spec}: line 3: not valid UTF-8 (byte 0xe9); save the file as UTF-8",
        f"clipbackdoor pretrain: error: {config}: line 1: not valid UTF-8 (byte 0xe9); save the file as UTF-8",
        f"clipbackdoor pretrain: error: --out {tmp_path / 'afile'} is a file, not a run directory; choose another "
        "output directory",
    ]


def test_an_os_error_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    import clipbackdoor.cli.synthetic as synthetic_cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.png"))

    monkeypatch.setattr(synthetic_cli, "run", full)
    assert main(["synthetic", "--out", str(tmp_path), "-n", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"clipbackdoor synthetic: error: No space left on device: {tmp_path / 'x.png'}"]
