"""report.tex and its booktabs tables, each a `\\input` away from a paper.

Writes `table_primary.tex` (the primary metric per patch size, the coarse-vs-fine row under a rule),
`table_secondary.tex` and `table_interaction.tex` (coarse-vs-fine for every metric): each a complete `table`
float with the interval, the pairs and the method in its caption and a `\\label{tab:specforce-...}`. A paper needs
`\\usepackage{booktabs}` for them. `report.tex` is a standalone article around them: the verdict, the tables and
every figure as PDF (written beside the PNGs by analysis.plots). The cells are the report's own strings, so the
digits match report.html (analysis.numbers).

    python -m analysis.report --experiment demo --out reports/demo && cd reports/demo && pdflatex report.tex
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_UNICODE = {"Δ": r"$\Delta$", "−": r"$-$", "·": r"$\cdot$", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$",
            "→": r"$\rightarrow$", "←": r"$\leftarrow$", "α": r"$\alpha$", "±": r"$\pm$", "√": r"$\surd$",
            "’": "'", "–": "--", "—": "---", "²": r"$^2$", "≈": r"$\approx$"}


def escape(text: object) -> str:
    """Plain text to LaTeX: special characters escaped, the report's Unicode as math, a minus before a digit as $-$."""
    out = "".join(_SPECIAL.get(ch, _UNICODE.get(ch, ch)) for ch in str(text))
    return re.sub(r"(?<![\w$])-(?=\d|\.\d)", r"$-$", out)


# the caption says what Δ is: a paper's column needs only the short name
_SHORT = (("Δ SF − baseline [", "Δ ["), ("Δ coarse − Δ fine [", "Δ coarse − fine ["), ("compression", "ratio"))


def _header(column: str) -> str:
    for long, short in _SHORT:
        column = column.replace(long, short)
    return escape(column)


def booktabs(table: pd.DataFrame, caption: str, label: str, rule_before_last: bool = False) -> str:
    """A `table` float: first column left, the others right-aligned; a \\midrule before the last row if asked."""
    align = "l" + "r" * (len(table.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{escape(caption)}}}",
             rf"\label{{tab:specforce-{label}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(_header(c) for c in table.columns) + r" \\", r"\midrule"]
    rows = [" & ".join(escape(v) for v in row) + r" \\" for row in table.astype(str).itertuples(index=False)]
    if rule_before_last and len(rows) > 1:
        rows.insert(len(rows) - 1, r"\midrule")
    lines += rows or [r"\multicolumn{%d}{l}{(none)} \\" % len(table.columns)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _figure(pdf: Path, caption: str) -> str:
    return "\n".join([r"\begin{figure}[t]", r"\centering",
                      rf"\includegraphics[width=\linewidth,height=0.42\textheight,keepaspectratio]{{{pdf.name}}}",
                      rf"\caption{{{escape(caption)}}}", r"\end{figure}", ""])


def write_latex(out: Path, title: str, verdict: str, tables: list[tuple[str, str, pd.DataFrame, bool]],
                figures: list[tuple[Path, str]], methods: list[str]) -> Path:
    """tables: (file stem, caption, table, rule before the last row); figures: (PNG path, caption). Returns
    the path of report.tex; the table files are written beside it."""
    body = [r"\documentclass[11pt]{article}", r"\usepackage[T1]{fontenc}", r"\usepackage[utf8]{inputenc}",
            r"\usepackage{lmodern}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{booktabs}",
            r"\usepackage{graphicx}", r"\usepackage{amsmath}", r"\begin{document}",
            rf"\section*{{{escape(title)}}}", escape(verdict), ""]
    for stem, caption, table, rule in tables:
        (out / f"{stem}.tex").write_text(booktabs(table, caption, stem.removeprefix("table_"), rule),
                                         encoding="utf-8")
        body.append(rf"\input{{{stem}}}")
    body.append("")
    for png, caption in figures:
        pdf = Path(png).with_suffix(".pdf")
        if pdf.is_file():
            body.append(_figure(pdf, caption))
    body += [r"\clearpage", r"\section*{Methods}"] + [escape(p) + "\n" for p in methods] + [r"\end{document}", ""]
    path = out / "report.tex"
    path.write_text("\n".join(body), encoding="utf-8")
    return path
