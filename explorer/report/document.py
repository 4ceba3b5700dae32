"""A tiny document model for reports, rendered to Markdown and to self-contained HTML.

A report is a :class:`Document`: a title, a lead paragraph and a list of :class:`Section` s, each
holding blocks (:class:`Para`, :class:`Bullets`, :class:`Table`, :class:`Figure`, :class:`Code`).
Text in paragraphs, bullets and table cells may use two inline marks: ```code``` and
``**bold**``; everything else is literal (HTML-escaped in the HTML output).

The HTML page is self-contained: inline CSS, figures as ``data:image/png;base64`` URIs, no
scripts, no external links (only ``#anchor`` links of the table of contents).  The Markdown file
links the figures as ``figures/<name>.png`` next to it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Para:
    """A paragraph of text (inline ```code``` and ``**bold**`` allowed)."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """An unordered list of short text items."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A table; ``rows`` are tuples of already formatted strings, one per header."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.headers):
                raise ValueError(f"rows[{i}] has {len(row)} cells for {len(self.headers)} headers")


@dataclass(frozen=True)
class Figure:
    """A PNG figure: ``name`` is the file stem under ``figures/``; ``png`` the encoded bytes."""

    name: str
    png: bytes
    caption: str
    alt: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", self.name):
            raise ValueError(f"figure name must be [a-z0-9_-]+, got {self.name!r}")
        if not self.png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"figure {self.name!r}: png is not PNG data")

    @property
    def filename(self) -> str:
        return f"figures/{self.name}.png"


@dataclass(frozen=True)
class Code:
    """A preformatted block (a command line, a constant listing)."""

    text: str


Block = Union[Para, Bullets, Table, Figure, Code]


@dataclass
class Section:
    """A titled section; ``anchor`` is its HTML id (derived from the title when empty)."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""

    def __post_init__(self) -> None:
        if not self.anchor:
            self.anchor = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"

    def add(self, *blocks: Block) -> "Section":
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    title: str
    lead: str
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


# ----------------------------------------------------------------------------------- inline marks
_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*")


def _inline_html(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            out.append(f"<strong>{_inline_html(m.group(2))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------------- Markdown
def render_markdown(doc: Document) -> str:
    """The report as GitHub-flavoured Markdown; figures linked as ``figures/<name>.png``."""
    lines = [f"# {doc.title}", "", doc.lead, "", "## Contents", ""]
    lines += [f"- [{s.title}](#{s.anchor})" for s in doc.sections]
    for s in doc.sections:
        lines += ["", f'<a id="{s.anchor}"></a>', "", f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Para):
                lines += [b.text, ""]
            elif isinstance(b, Bullets):
                lines += [f"- {item}" for item in b.items] + [""]
            elif isinstance(b, Table):
                if b.caption:
                    lines += [f"*{b.caption}*", ""]
                lines.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                lines.append("|" + "|".join("---" for _ in b.headers) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                lines.append("")
            elif isinstance(b, Figure):
                lines += [f"![{b.alt or b.caption}]({b.filename})", "", f"*{b.caption}*", ""]
            elif isinstance(b, Code):
                lines += ["```", b.text.rstrip("\n"), "```", ""]
            else:  # pragma: no cover - Block is a closed union
                raise TypeError(f"unknown block type {type(b).__name__}")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9;line-height:1.5}
main{max-width:980px;margin:0 auto;padding:24px 32px 64px;background:#fff;
box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.9em;margin:.4em 0 .2em}
h2{font-size:1.35em;border-bottom:2px solid #e3e6ec;padding-bottom:.2em;margin-top:2em}
p.lead{font-size:1.05em;color:#3a4256}
nav ol{columns:2;padding-left:1.4em}
nav a,main a{color:#1f5fbf;text-decoration:none}
table{border-collapse:collapse;margin:.8em 0 1.2em;font-size:.92em}
p.caption{font-style:italic;color:#555;margin:1em 0 -.5em}
th,td{border:1px solid #d7dbe3;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef1f6}
tr:nth-child(even) td{background:#fafbfc}
code{font-family:"SFMono-Regular",Consolas,"Liberation Mono",monospace;font-size:.9em;
background:#f0f2f5;padding:1px 4px;border-radius:3px}
pre{background:#f0f2f5;padding:10px 14px;overflow-x:auto;border-radius:4px}
pre code{background:none;padding:0}
figure{margin:1em 0 1.6em}
figure img{max-width:100%;height:auto;border:1px solid #e3e6ec}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
""".strip()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding a PNG in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(doc: Document) -> str:
    """The report as one self-contained HTML5 page (inline CSS, embedded figures, no scripts)."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           "<main>", f"<h1>{e(doc.title)}</h1>", f'<p class="lead">{_inline_html(doc.lead)}</p>',
           "<nav><h2>Contents</h2><ol>"]
    out += [f'<li><a href="#{e(s.anchor)}">{e(s.title)}</a></li>' for s in doc.sections]
    out.append("</ol></nav>")
    for s in doc.sections:
        out.append(f'<section id="{e(s.anchor)}">')
        out.append(f"<h2>{e(s.title)}</h2>")
        for b in s.blocks:
            if isinstance(b, Para):
                out.append(f"<p>{_inline_html(b.text)}</p>")
            elif isinstance(b, Bullets):
                out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items)
                           + "</ul>")
            elif isinstance(b, Table):
                if b.caption:
                    out.append(f'<p class="caption">{_inline_html(b.caption)}</p>')
                out.append("<table>")
                out.append("<thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
                           + "</tr></thead><tbody>")
                for row in b.rows:
                    out.append("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row)
                               + "</tr>")
                out.append("</tbody></table>")
            elif isinstance(b, Figure):
                out.append(f'<figure id="fig-{e(b.name)}"><img src="{png_data_uri(b.png)}" '
                           f'alt="{e(b.alt or b.caption)}" data-file="{e(b.filename)}">'
                           f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>")
            elif isinstance(b, Code):
                out.append(f"<pre><code>{e(b.text.rstrip())}</code></pre>")
            else:  # pragma: no cover
                raise TypeError(f"unknown block type {type(b).__name__}")
        out.append("</section>")
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"
