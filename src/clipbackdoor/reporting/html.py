"""Markdown tables and a single self-contained HTML report page.

The page inlines its CSS and embeds images as base64 data URIs, so one file can be mailed, archived next to the
runs or opened from a cluster's scratch space without its figure folder. Every piece of text is HTML-escaped:
labels and captions come from config files and folder names, which are not trusted markup.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 80rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.verdict { background: #f3f6fb; border-left: 5px solid #1f3f8f; padding: 0.6rem 1rem; margin: 1.2rem 0; }
.verdict p:first-child { font-size: 1.15rem; font-weight: 600; }
/* A wide table scrolls inside its own box instead of running past the page's column. */
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.88rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
/* A cell written in lines (a value, then the run and epoch that gave it) breaks only where it says. */
td.lines { white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafa; }
.note { color: #555; font-size: 0.9rem; }
figure { margin: 0.6rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.missing { color: #a00000; font-weight: bold; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
footer { margin-top: 3rem; color: #777; font-size: 0.85rem; border-top: 1px solid #ddd; padding-top: 0.5rem; }
"""

_BLANK_LINES = re.compile(r"\n\s*\n")


def markdown_table(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; cells are ``str()``-ed as they are, so format numbers beforehand.

    ``|`` in a cell is escaped and line breaks become spaces, since either would otherwise end the cell or the
    row. A row shorter than the header is padded with empty cells; a longer one is an error.
    """
    width = len(headers)
    lines = [_markdown_row(headers), "| " + " | ".join("---" for _ in headers) + " |"]
    for row in rows:
        if len(row) > width:
            raise ValueError(f"table row has {len(row)} cells for {width} columns: {list(row)!r}")
        lines.append(_markdown_row([*row, *[""] * (width - len(row))]))
    return "\n".join(lines) + "\n"


def _markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |"


def _markdown_cell(cell: object) -> str:
    return " ".join(str(cell).splitlines()).replace("|", r"\|")


def render_html(
    *,
    title: str,
    verdict: str,
    sections: Sequence[Mapping[str, Any]],
    config_text: str,
    generated: str,
) -> str:
    """The report as one HTML page.

    ``sections`` are rendered in order, each under its ``caption`` as a heading:

    * ``{"kind": "table", "caption", "headers", "rows", "note" (optional)}``
    * ``{"kind": "image", "caption", "path", "note" (optional)}``: the image is embedded; a missing file becomes
      a visible notice instead of an error, so one lost figure does not cost the whole report.
    * ``{"kind": "text", "caption", "body"}``: blank-line separated paragraphs.
    * ``{"kind": "images", "caption", "images": [{"caption", "path"}, ...], "note" (optional)}``: several
      embedded images under one heading, each with its own caption below it.

    A line break in a table cell is kept (``<br>``), so a long cell can put its details on a line of their own.
    ``verdict`` (paragraphs) is shown prominently under the title, its first paragraph (the answer) in bold,
    ``config_text`` verbatim under "Configuration", and ``generated`` in the footer.
    """
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<div class="verdict">{_paragraphs(verdict)}</div>',
        *(_section(section) for section in sections),
        "<h2>Configuration</h2>",
        f"<pre>{escape(config_text)}</pre>",
        f"<footer>{escape(generated)}</footer>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _section(section: Mapping[str, Any]) -> str:
    kind = section.get("kind")
    heading = f"<h2>{escape(str(section.get('caption', '')))}</h2>"
    if kind == "table":
        parts = [heading, _html_table(section["headers"], section["rows"])]
        if section.get("note"):
            parts.append(f'<p class="note">{escape(str(section["note"]))}</p>')
        return "\n".join(parts)
    if kind == "image":
        note = f'<p class="note">{escape(str(section["note"]))}</p>' if section.get("note") else ""
        return "\n".join(p for p in (heading, note, _image(Path(section["path"]), str(section.get("caption", ""))))
                         if p)
    if kind == "text":
        return heading + "\n" + _paragraphs(str(section.get("body", "")))
    if kind == "images":
        parts = [heading]
        if section.get("note"):
            parts.append(f'<p class="note">{escape(str(section["note"]))}</p>')
        for item in section["images"]:
            caption = str(item.get("caption", ""))
            parts.append(_image(Path(item["path"]), caption, shown=True))
        return "\n".join(parts)
    raise ValueError(f"unknown report section kind {kind!r}; expected 'table', 'image', 'images' or 'text'")


def _html_table(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(_html_cell(cell) for cell in row) + "</tr>" for row in rows)
    return (f'<div class="table-wrap"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n'
            "</table></div>")


def _html_cell(cell: object) -> str:
    # Numbers are right-aligned so that digits line up down a column; bool is an int but reads as a word.
    numeric = isinstance(cell, int | float) and not isinstance(cell, bool)
    lines = str(cell).splitlines()
    text = "<br>".join(escape(line) for line in lines)
    kind = "num" if numeric else "lines" if len(lines) > 1 else ""
    return f'<td class="{kind}">{text}</td>' if kind else f"<td>{text}</td>"


def _image(path: Path, caption: str, shown: bool = False) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return f'<p class="missing">missing: {escape(path.name)}</p>'
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    encoded = base64.b64encode(data).decode("ascii")
    # A lone image's caption is already the section heading: then it only serves as alt text.
    below = f"<figcaption>{escape(caption)}</figcaption>" if shown else ""
    return f'<figure><img src="data:{mime};base64,{encoded}" alt="{escape(caption)}">{below}</figure>'


def _paragraphs(text: str) -> str:
    paragraphs = [p.strip() for p in _BLANK_LINES.split(text.strip())]
    return "\n".join(f"<p>{escape(p)}</p>" for p in paragraphs if p)
