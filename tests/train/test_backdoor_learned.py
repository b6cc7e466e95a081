"""The headline check of the core pipeline, too long for the default suite (about 4 minutes on 2 cores):
MMCL pre-training on the shipped config learns the BadNet backdoor while learning the task, and CleanCLIP
lowers the ASR. Run with `pytest -m slow`."""

import pytest

from clipbackdoor.cli import main
from clipbackdoor.io import read_jsonl


@pytest.mark.slow
def test_mmcl_learns_the_backdoor_and_cleanclip_lowers_it(tmp_path):
    assert main(["pretrain", "--config", "mmcl", "--out", str(tmp_path / "mmcl"), "train.progress=false"]) == 0
    final = [r for r in read_jsonl(tmp_path / "mmcl" / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert final["asr_top1"] > 0.8
    assert final["zeroshot_top1"] > 0.3  # chance is 0.1
    assert final["clean_target_rate"] < 0.1  # the ASR is the trigger's doing, not a banana bias

    assert main(["clean", "--from", str(tmp_path / "mmcl"), "--out", str(tmp_path / "clean"),
                 "train.progress=false"]) == 0
    cleaned = [r for r in read_jsonl(tmp_path / "clean" / "metrics.jsonl") if r["kind"] == "eval"]
    assert min(r["asr_top1"] for r in cleaned[1:]) < final["asr_top1"] / 2
