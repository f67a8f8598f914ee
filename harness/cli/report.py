"""`harness report`: the paper's tables and figures (HTML, LaTeX, markdown) from a database."""

from __future__ import annotations

import argparse

from harness.api.registry import Registry


def cmd_report(args: argparse.Namespace, registry: Registry) -> int:
    from harness_reports.render import parse_formats, write_report

    formats = parse_formats(args.format)
    for path in write_report(args.db, args.out, formats, args.run):
        print(path)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``report`` sub-command and its options."""
    p = sub.add_parser("report", help="render the paper's tables and figures (HTML, LaTeX, markdown) from a database")
    p.add_argument("--db", required=True, help="the results database a grid wrote")
    p.add_argument("--out", required=True, help="folder for report.html, report.md, *.tex and figures/")
    p.add_argument("--format", default="html,latex,markdown", help="comma-separated: html, latex, markdown")
    p.add_argument("--run", help="run id (a prefix is enough); default: the latest")
    p.set_defaults(func=cmd_report)
