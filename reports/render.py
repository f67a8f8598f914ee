"""Render a report (HTML, LaTeX, markdown) from the database with the jinja2 templates in reports/templates.

HTML autoescapes everything (names come from users' config files); LaTeX gets its own escape filter
and delimiters that do not clash with TeX's braces.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import unicodedata
from pathlib import Path
from typing import Iterable

import jinja2

from harness.api.errors import HarnessError
from harness.storage.store import Store
from harness_reports.content import Cell, ReportContent, build_content, empty_content
from harness_reports.figures import radius_text, render_figures

TEMPLATES = Path(__file__).parent / "templates"
FORMATS = ("html", "latex", "markdown")
LATEX_FILES = ("main", "std", "adaptive", "paired", "flips", "facts", "figures")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  # pdflatex's utf8 input knows none of these
                  "−": "--", "–": "--", "—": "---", "ε": r"$\varepsilon$", "×": r"$\times$", "±": r"$\pm$",
                  "→": r"$\to$", "…": r"\dots{}"}


# combining marks pdflatex can typeset as accents over the base letter
_LATEX_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0308": '"', "\u0304": "=",
                  "\u0306": "u", "\u0307": ".", "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c",
                  "\u0328": "k"}


def _latex_char(ch: str) -> str:
    """One character for pdflatex: specials escaped, Greek letters as math, accented Latin letters as
    accent commands, compatibility forms (², ﬁ, full-width letters) as their plain equivalents, and
    anything else as a visible '?' so that the document still compiles."""
    if ch in _LATEX_SPECIAL:
        return _LATEX_SPECIAL[ch]
    if ch.isascii():
        return ch if ch.isprintable() else " "
    name = unicodedata.name(ch, "")
    if name.startswith("GREEK ") and " LETTER " in name:
        letter = name.rsplit(" ", 1)[-1].lower()
        letter = {"lamda": "lambda", "final": "varsigma"}.get(letter, letter)
        command = letter.capitalize() if "CAPITAL" in name else letter
        if letter in {"alpha", "beta", "epsilon", "zeta", "eta", "iota", "kappa", "mu", "nu", "rho", "tau",
                      "chi", "omicron"} and "CAPITAL" in name:
            return {"omicron": "O"}.get(letter, letter[0].upper())   # the Latin capital looks the same
        return "$\\" + ("o" if command == "omicron" else command) + "$"
    base, *marks = unicodedata.normalize("NFD", ch)
    if marks and base.isascii() and all(m in _LATEX_ACCENTS for m in marks):
        text = base
        for mark in marks:
            text = f"\\{_LATEX_ACCENTS[mark]}{{{text}}}"
        return text
    plain = unicodedata.normalize("NFKC", ch)
    if plain != ch and all(c.isascii() or c in _LATEX_SPECIAL for c in plain):
        return "".join(_latex_char(c) for c in plain)
    return "?"


def latex_escape(value: object) -> str:
    return "".join(_latex_char(ch) for ch in str(value))


def header_lines(value: object, width: int = 9) -> list[str]:
    """A column header in at most two lines: a name longer than ``width`` breaks at the space nearest its
    middle, so that numeric columns are as wide as their numbers, not their names."""
    text = str(value)
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if len(text) <= width or not spaces:
        return [text]
    cut = min(spaces, key=lambda i: abs(i - len(text) / 2))
    return [text[:cut], text[cut + 1:]]


def latex_signed(value: float, digits: int = 2) -> str:
    """A signed number in math mode, so that its minus is a minus sign and not a hyphen."""
    return f"${value:+.{digits}f}$"


def latex_header(value: object) -> str:
    lines = [latex_escape(line) for line in header_lines(value)]
    return lines[0] if len(lines) == 1 else f"\\begin{{tabular}}[b]{{@{{}}c@{{}}}}{lines[0]}\\\\{lines[1]}\\end{{tabular}}"


def markdown_escape(value: object) -> str:
    """One table cell or list item: pipes would split a cell, a line break would end the table, and
    `*_[]<>` would become emphasis, links or raw HTML. Control characters become spaces."""
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in str(value))
    return "".join("\\" + ch if ch in "\\|*_`[]<>#" else ch for ch in text)


def code_fence(text: str) -> str:
    """A backtick fence longer than any run of backticks inside ``text``, so the text cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def interval(cell: Cell | None) -> str:
    return "" if cell is None else f"{cell.low:.1f}–{cell.high:.1f}"


def timestamp(seconds: float | None) -> str:
    if seconds is None:
        return "(not finished)"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


COLUMN_WIDTH_PT = 229.5   # \columnwidth of a two-column article; wider tables are set for table*
_SMALL_CHAR_PT = 4.6      # a digit at \small; names average about the same


def latex_width(columns: Iterable[tuple[object, Iterable[object]]]) -> str:
    """Which float a compact table belongs in, from an estimate of its natural width: each column as wide
    as its longest line (a two-line header counts its longer half), plus the 3 pt padding either side;
    ``columns`` are (header, values) pairs.
    Only advice for the file's comment: \\harnessfit shrinks whatever is still wider than the line."""
    natural = sum(max([len(line) for line in header_lines(header)] + [len(str(v)) for v in values]) * _SMALL_CHAR_PT
                  + 6 for header, values in columns)
    return ("fits \\columnwidth: place it in a table" if natural <= COLUMN_WIDTH_PT
            else "set for \\textwidth: place it in a table* in a two-column document")


def latex_shown(t: object) -> list[int]:
    """The columns of a main or spread table that some cell evaluated; LaTeX drops the others."""
    return [i for i, key in enumerate(t.keys) if key not in t.unevaluated]


def latex_table_width(t: object) -> str:
    shown = latex_shown(t)
    return latex_width([("Defense", [r.defense + "  " for g in t.groups for r in g.rows])]   # indented under the model
                       + [(t.columns[i], ["100.00"]) for i in shown])


def _environment(latex: bool, autoescape: bool) -> jinja2.Environment:
    options = dict(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape, undefined=jinja2.StrictUndefined,
                   keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    if latex:  # TeX uses { } and % everywhere; give jinja other delimiters
        options.update(block_start_string="<%", block_end_string="%>", variable_start_string="<<",
                       variable_end_string=">>", comment_start_string="<#", comment_end_string="#>")
    env = jinja2.Environment(**options)
    env.globals.update(shown=latex_shown, table_width=latex_table_width, width=latex_width)
    env.filters.update(tex=latex_escape, header=latex_header, signed=latex_signed, md=markdown_escape, fence=code_fence, num=number, interval=interval, timestamp=timestamp,
                       eps=radius_text, b64=lambda data: base64.b64encode(data).decode("ascii"))
    return env


def render_html(content: ReportContent, figures: list, out: Path) -> Path:
    env = _environment(latex=False, autoescape=True)
    svgs = {f.name: jinja2.utils.markupsafe.Markup(f.svg) for f in figures}  # our own matplotlib output: trusted
    path = out / "report.html"
    path.write_text(env.get_template("report.html.j2").render(c=content, figures=figures, svgs=svgs), encoding="utf-8")
    return path


def render_markdown(content: ReportContent, figures: list, out: Path) -> Path:
    path = out / "report.md"
    path.write_text(_environment(latex=False, autoescape=False).get_template("report.md.j2")
                    .render(c=content, figures=figures), encoding="utf-8")
    return path


def render_latex(content: ReportContent, figures: list, out: Path) -> list[Path]:
    env = _environment(latex=True, autoescape=False)
    paths = []
    for name in LATEX_FILES:
        path = out / f"{name}.tex"
        path.write_text(env.get_template(f"{name}.tex.j2").render(c=content, figures=figures), encoding="utf-8")
        paths.append(path)
    return paths


def parse_formats(text: str | Iterable[str]) -> list[str]:
    """Report formats from "html,latex" (or a list); an unknown or empty choice is an error naming the allowed ones."""
    formats = [f.strip() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise HarnessError(f"--format {','.join(formats)!r}: unknown format(s) {', '.join(unknown) or '(none given)'}; "
                           f"choose from {', '.join(FORMATS)}, comma-separated")
    return formats


def write_report(db: str | Path, out: str | Path, formats: str | Iterable[str] = FORMATS,
                 run_id: str | None = None) -> list[Path]:
    """Render the report of one run (the latest by default) into ``out``; returns the files written."""
    formats = parse_formats(formats)
    if not str(out).strip():
        raise HarnessError("--out is empty; pass the folder the report goes into, e.g. --out results/report")
    with Store(db, readonly=True) as store:  # refuses what is missing, not SQLite, or not ours, before any write
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise HarnessError(f"--out {out} is a file; the report needs a folder. Fix: pass a new or existing folder")
        content = build_content(store, run_id) if Path(db).expanduser().stat().st_size \
            else empty_content(f"{db} is empty: no run has written to it yet.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        figures = render_figures(content, out / "figures")
        written: list[Path] = []
        if "html" in formats:
            written.append(render_html(content, figures, out))
        if "markdown" in formats:
            written.append(render_markdown(content, figures, out))
        if "latex" in formats:
            written += render_latex(content, figures, out)
    except OSError as exc:
        raise HarnessError(f"--out {out}: cannot write the report: {exc.strerror or exc}. Fix: free space or pass "
                           "a writable folder; the database was only read") from None
    return written
