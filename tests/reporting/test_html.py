"""Markdown tables and the self-contained HTML report: escaping, image embedding, missing files."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest

from clipbackdoor.reporting.html import markdown_table, render_html


def tiny_png(path: Path) -> bytes:
    """Write a valid 1x1 PNG by hand (no matplotlib needed) and return its bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte + one red pixel
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return data


def render(sections, **overrides) -> str:
    kwargs = {
        "title": "Backdoor report",
        "verdict": "Cleaning works.",
        "sections": sections,
        "config_text": "model: tiny-clip",
        "generated": "2024-01-01 by clipbackdoor report",
    } | overrides
    return render_html(**kwargs)


def test_markdown_table():
    table = markdown_table(["method", "ASR"], [["cleanclip", "1.2"], ["a|b", 3], ["short"]])
    assert table.splitlines() == [
        "| method | ASR |",
        "| --- | --- |",
        "| cleanclip | 1.2 |",
        # An unescaped | would split the cell and shift every later column.
        r"| a\|b | 3 |",
        # Short rows are padded so the table stays rectangular.
        "| short |  |",
    ]


def test_markdown_table_rejects_long_rows():
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        markdown_table(["a", "b"], [[1, 2, 3]])


def test_all_text_is_escaped():
    # Captions, cells and config come from folder names and YAML files; none of it may become live markup.
    page = render(
        [
            {"kind": "table", "caption": "<script>alert(1)</script>", "headers": ["<b>"], "rows": [["a&b"]]},
            {"kind": "text", "caption": "t", "body": "x < y\n\nsecond <i>paragraph</i>"},
        ],
        title="<title>",
        verdict="<em>verdict</em>",
        config_text="key: <value>",
        generated="<footer>",
    )
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<th>&lt;b&gt;</th>" in page
    assert "<td>a&amp;b</td>" in page
    assert "<p>x &lt; y</p>" in page and "<p>second &lt;i&gt;paragraph&lt;/i&gt;</p>" in page
    assert "&lt;em&gt;verdict&lt;/em&gt;" in page
    assert "<pre>key: &lt;value&gt;</pre>" in page
    assert "&lt;footer&gt;" in page


def test_page_structure():
    page = render(
        [{"kind": "table", "caption": "Results", "headers": ["a"], "rows": [[0.5]], "note": "ASR in %"}],
        verdict="First paragraph.\n\nSecond paragraph.",
    )
    assert page.startswith("<!DOCTYPE html>")
    assert page.index("First paragraph.") < page.index("Results") < page.index("Configuration")
    assert "<p>First paragraph.</p>" in page and "<p>Second paragraph.</p>" in page
    assert '<td class="num">0.5</td>' in page
    assert "ASR in %" in page
    # Self-contained: nothing is fetched from elsewhere.
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_image_is_embedded(tmp_path):
    data = tiny_png(tmp_path / "scatter.png")
    page = render([{"kind": "image", "caption": "Scatter", "path": tmp_path / "scatter.png"}])
    assert f'src="data:image/png;base64,{base64.b64encode(data).decode()}"' in page


def test_missing_image_is_reported_not_raised(tmp_path):
    # One lost figure must not cost the whole report.
    page = render([{"kind": "image", "caption": "Pareto", "path": tmp_path / "pareto.png"}])
    assert "missing: pareto.png" in page
    assert "data:image" not in page


def test_unknown_section_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown report section kind"):
        render([{"kind": "chart", "caption": "x"}])
