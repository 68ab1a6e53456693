"""``report.html`` beside ``report.md``: the same report as one self-contained page, its figures inline.

Converts the Markdown the report's sections write, a small subset: ATX headings, paragraphs, ``>`` quotes,
``-`` lists, fenced code, pipe tables (``\\|`` in a cell), and inline code, ``**bold**``, ``*emphasis*``,
links and images. An image whose file is beside the report (``graphs/*.png``, ``.svg``, ...; for a ``.pdf``,
the same figure in one of those) is embedded as a base64 ``data:`` URI, so the page needs nothing else; any
other image keeps its relative link.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from pathlib import Path

from lib.results import atomic_write_text

HTML = "report.html"
MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
STYLE = """body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; }
th { background: #f3f3f3; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.75rem; overflow-x: auto; }
blockquote { border-left: 4px solid #ddd; margin-left: 0; padding-left: 1rem; color: #555; }"""

FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
RULE_ROW = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
ITEM = re.compile(r"^\s*[-*+]\s+")
INLINE = re.compile(
    r"(?P<ticks>`+)(?P<code>.+?)(?P=ticks)"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"
    r"|\[(?P<label>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<strong>.+?)\*\*"
    r"|\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*"
    r"|\\(?P<escaped>[\\`*_{}\[\]()#+\-.!|>])"
)


def closes(line: str, fence: str) -> bool:
    """Whether ``line`` ends a code block opened by ``fence``: the same character, at least as many times."""
    mark = line.strip()
    return len(mark) >= len(fence) and set(mark) == {fence[0]}


class Page:
    """Converts one report; ``base`` is the directory its image paths are relative to."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def image(self, alt: str, src: str) -> str:
        """The image embedded: the file itself, or (a PDF when GRAPH_FORMATS lists pdf first) the same figure in
        a format a browser shows inline; else a relative link."""
        path = self.base / src
        candidates = [path, *(path.with_suffix(suffix) for suffix in MIME)] if "://" not in src else []
        for candidate in candidates:
            mime = MIME.get(candidate.suffix.lower())
            if mime and candidate.is_file():
                src = f"data:{mime};base64,{base64.b64encode(candidate.read_bytes()).decode()}"
                break
        return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'

    def inline(self, text: str) -> str:
        """One line's inline Markdown as HTML; everything else is escaped text."""
        out, end = [], 0
        for m in INLINE.finditer(text):
            out.append(html.escape(text[end : m.start()]))
            end = m.end()
            if m["ticks"]:
                code = m["code"]
                code = code[1:-1] if len(code) > 2 and code[0] == code[-1] == " " else code
                out.append(f"<code>{html.escape(code)}</code>")
            elif m["src"]:
                out.append(self.image(m["alt"], m["src"]))
            elif m["href"]:
                out.append(f'<a href="{html.escape(m["href"])}">{self.inline(m["label"])}</a>')
            elif m["strong"]:
                out.append(f"<strong>{self.inline(m['strong'])}</strong>")
            elif m["em"]:
                out.append(f"<em>{self.inline(m['em'])}</em>")
            else:
                out.append(html.escape(m["escaped"]))
        out.append(html.escape(text[end:]))
        return "".join(out)

    def table(self, lines: list[str]) -> str:
        def cells(line: str) -> list[str]:
            """The cells between unescaped pipes; ``\\|`` is a pipe in a cell, in code spans too (as in GFM)."""
            parts = re.split(r"(?<!\\)\|", line.strip())
            parts = parts[1 if line.strip().startswith("|") else 0 : -1 if line.strip().endswith("|") else None]
            return [part.replace("\\|", "|").strip() for part in parts]

        head = "".join(f"<th>{self.inline(c)}</th>" for c in cells(lines[0]))
        body = ["<tr>" + "".join(f"<td>{self.inline(c)}</td>" for c in cells(r)) + "</tr>" for r in lines[2:]]
        return "\n".join(["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>", "</table>"])

    def blocks(self, lines: list[str]) -> Iterator[str]:
        """The HTML of each block of ``lines``, in order."""
        i = 0
        while i < len(lines):
            line = lines[i]
            start = i
            i += 1
            if not line.strip():
                continue
            if fence := FENCE.match(line):
                while i < len(lines) and not closes(lines[i], fence[1]):
                    i += 1
                lang = f' class="language-{html.escape(fence[2])}"' if fence[2] else ""
                yield f"<pre><code{lang}>{html.escape(chr(10).join(lines[start + 1 : i]))}</code></pre>"
                i += 1  # the closing fence
            elif heading := HEADING.match(line):
                level = len(heading[1])
                yield f"<h{level}>{self.inline(heading[2])}</h{level}>"
            elif line.lstrip().startswith("|") and i < len(lines) and RULE_ROW.match(lines[i]):
                while i < len(lines) and lines[i].lstrip().startswith("|"):
                    i += 1
                yield self.table(lines[start:i])
            elif line.startswith(">"):
                while i < len(lines) and lines[i].startswith(">"):
                    i += 1
                inner = [re.sub(r"^> ?", "", q) for q in lines[start:i]]
                yield "<blockquote>\n" + "\n".join(self.blocks(inner)) + "\n</blockquote>"
            elif ITEM.match(line):
                while i < len(lines) and ITEM.match(lines[i]):
                    i += 1
                items = [f"<li>{self.inline(ITEM.sub('', item))}</li>" for item in lines[start:i]]
                yield "<ul>\n" + "\n".join(items) + "\n</ul>"
            else:
                while i < len(lines) and lines[i].strip() and not self.starts_block(lines, i):
                    i += 1
                yield "<p>" + "\n".join(self.inline(p.strip()) for p in lines[start:i]) + "</p>"

    @staticmethod
    def starts_block(lines: list[str], i: int) -> bool:
        line = lines[i]
        table = line.lstrip().startswith("|") and i + 1 < len(lines) and RULE_ROW.match(lines[i + 1])
        return bool(FENCE.match(line) or HEADING.match(line) or table or line.startswith(">") or ITEM.match(line))


def to_html(markdown: str, base: Path) -> str:
    """``markdown`` as a complete HTML page; images relative to ``base`` are embedded."""
    lines = markdown.splitlines()
    title = next((h[2] for h in map(HEADING.match, lines) if h), "report").replace("`", "")
    body = "\n".join(Page(base).blocks(lines))
    head = f'<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>\n{STYLE}\n</style>'
    return f"<!DOCTYPE html>\n<html>\n<head>\n{head}\n</head>\n<body>\n{body}\n</body>\n</html>\n"


def write_html(report: Path) -> Path:
    """``report.html`` beside the Markdown file ``report``; returns its path."""
    path = report.with_name(HTML)
    atomic_write_text(path, to_html(report.read_text(), report.parent))
    return path
