"""Atomic writes and JSON-lines files: torn tails from interrupted writes, damaged lines."""

import json

import pytest

from clipbackdoor.errors import DataError
from clipbackdoor.io import JsonlLogger, drop_torn_tail, read_jsonl, scan_jsonl

RECORDS = [{"kind": "train", "step": 1}, {"kind": "eval", "epoch": 1, "step": 2}]


def _write(path, tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS) + tail)


@pytest.mark.parametrize("tail", [b'{"kind": "train", "st', b"\x00" * 37, b"\xff\xfe", b"   {"],
                         ids=["cut-record", "zeros", "bad-bytes", "brace"])
def test_a_torn_tail_is_left_out_and_cut_before_the_next_append(tmp_path, tail, caplog):
    path = tmp_path / "metrics.jsonl"
    _write(path, tail)
    assert read_jsonl(path) == RECORDS
    assert scan_jsonl(path).torn_tail == tail
    # Appending onto the fragment would merge the next record with it into one unreadable line.
    with JsonlLogger(path) as logger:
        logger.log({"kind": "epoch", "epoch": 1})
    assert read_jsonl(path) == [*RECORDS, {"kind": "epoch", "epoch": 1}]
    assert f"dropped a torn last line ({len(tail)} bytes)" in caplog.text


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(json.dumps(RECORDS[0]).encode())
    assert drop_torn_tail(path) == 0
    assert path.read_bytes().endswith(b"}\n") and read_jsonl(path) == RECORDS[:1]


def test_a_file_that_is_all_fragment_becomes_empty(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"kind": "tr')
    assert drop_torn_tail(path) == 12 and path.read_bytes() == b""
    assert drop_torn_tail(tmp_path / "absent.jsonl") == 0


def test_a_long_file_is_repaired_from_its_tail(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [{"step": i, "pad": "x" * 50} for i in range(5000)]  # ~330 kB: more than one read chunk
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 50')
    assert drop_torn_tail(path) == len('{"step": 50')
    assert read_jsonl(path) == lines


@pytest.mark.parametrize("bad", [b"garbage", b'["a list"]', b'{"cut": ', b"\xff\xfe{}"])
def test_a_damaged_line_before_the_last_is_an_error_naming_it(tmp_path, bad):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(json.dumps(RECORDS[0]).encode() + b"\n" + bad + b"\n" + json.dumps(RECORDS[1]).encode() + b"\n")
    with pytest.raises(DataError, match=r"metrics\.jsonl: line 2 is not a JSON record; the file was damaged"):
        read_jsonl(path)
    scan = scan_jsonl(path)
    assert scan.records == RECORDS and scan.bad_lines == [2] and scan.torn_tail == b""
