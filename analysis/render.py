"""Render a report document (sections of text, tables and figures) to self-contained HTML and to Markdown.

The HTML embeds every figure as a base64 PNG and its CSS inline, and has no script: it opens from a file with no
server and nothing to fail in the browser console. The Markdown links the PNGs next to it.

    python -c "from analysis.render import Section, to_markdown; print(to_markdown('T', [Section('S', ['hi'])]))"
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Plot:
    path: Path
    caption: str


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    figures: list[Plot] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    css_class: str = ""
    tables_first: bool = False  # tables above figures (the first screen: numbers, then the forest plot)
    details: list[str] = field(default_factory=list)  # folded away in HTML (<details>), a plain list in Markdown
    details_title: str = ""
    after: list[str] = field(default_factory=list)  # paragraphs below the tables and figures


def cell(value) -> str:
    """Compact text for a table cell: 4 significant digits for floats, blanks for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


CSS = """
:root { --fg:#1d2430; --muted:#5f6b7a; --sf:#e4572e; --line:#e3e6ea; --bg:#f7f8fa; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.55 -apple-system, "Segoe UI", Roboto, "Liberation Sans", Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1180px; margin:0 auto; padding:28px 28px 60px; }
header h1 { font-size:26px; margin:0 0 4px; }
header p { margin:0; color:var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px; margin:18px 0; }
section h2 { font-size:19px; margin:0 0 10px; }
section.verdict { border-left:6px solid var(--sf); }
section.verdict p:first-of-type { font-size:18px; font-weight:600; }
section.todo { border-left:6px solid #f2b134; }
section.verdict table { font-size:14px; }
section.verdict tbody tr:last-child td { border-top:2px solid #c9ced6; }
details summary { cursor:pointer; color:var(--muted); font-size:13px; margin-top:6px; }
section.methods p { font-size:14px; }
figure { margin:14px 0; text-align:center; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; background:#fff; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.table-wrap { overflow-x:auto; margin:10px 0; }
table { border-collapse:collapse; font-size:13px; width:auto; }
caption { text-align:left; color:var(--muted); padding:4px 0; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:5px 10px; text-align:right; white-space:nowrap; }
th { background:#eef1f5; font-weight:600; }
td:first-child, th:first-child { text-align:left; }
tr:nth-child(even) td { background:#fafbfc; }
ul { margin:6px 0; padding-left:22px; }
footer { color:var(--muted); font-size:12px; margin-top:26px; }
"""


def _table_html(caption: str, table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure_html(fig: Plot) -> str:
    data = base64.b64encode(Path(fig.path).read_bytes()).decode("ascii")
    alt = html.escape(fig.caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{alt}</figcaption></figure>")


def to_html(title: str, subtitle: str, sections: list[Section], footer: str = "") -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
             f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"]
    for s in sections:
        cls = f' class="{s.css_class}"' if s.css_class else ""
        parts.append(f"<section{cls}><h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        if s.bullets:
            parts.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in s.bullets) + "</ul>")
        figures, tables = [_figure_html(f) for f in s.figures], [_table_html(c, t) for c, t in s.tables]
        parts += tables + figures if s.tables_first else figures + tables
        parts += [f"<p>{html.escape(p)}</p>" for p in s.after]
        if s.details:
            parts.append(f"<details><summary>{html.escape(s.details_title or 'More')}</summary><ul>"
                         + "".join(f"<li>{html.escape(b)}</li>" for b in s.details) + "</ul></details>")
        parts.append("</section>")
    if footer:
        parts.append(f"<footer>{html.escape(footer)}</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _table_md(caption: str, table: pd.DataFrame) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"*{caption}*", ""] if caption else []
    lines.append("| " + " | ".join(esc(str(c)) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(esc(cell(v)) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def to_markdown(title: str, sections: list[Section], subtitle: str = "", footer: str = "") -> str:
    out = [f"# {title}", ""]
    if subtitle:
        out += [subtitle, ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        if s.bullets:
            out += [f"- {b}" for b in s.bullets] + [""]
        figures = [[f"![{f.caption}]({Path(f.path).name})", "", f"*{f.caption}*", ""] for f in s.figures]
        tables = [[_table_md(c, t), ""] for c, t in s.tables]
        for block in (tables + figures if s.tables_first else figures + tables):
            out += block
        for p in s.after:
            out += [p, ""]
        if s.details:
            out += [f"**{s.details_title or 'More'}**", ""] + [f"- {b}" for b in s.details] + [""]
    if footer:
        out += ["---", footer, ""]
    return "\n".join(out)
