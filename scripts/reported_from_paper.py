"""Copy one of the Hedge paper's accuracy tables into a grid's ``[reported]`` table, exactly as printed.

    python3 scripts/reported_from_paper.py ../shared/paper/attacking-adversarial-attacks-as-a-defense.md \
        --table 5 --models configs/table5.toml

The paper's tables are tab-separated: a header row (Model, Method, Nat-Acc., PGD, …), then per model one
row for "-" (no defense) and continuation rows (Random or Uniform, Hedge) that leave the model cell empty.
Rows are matched to the grid's models in order; a paper row whose name does not start with the grid
label of the next model (ignoring spaces) is skipped when the grid's label is such a prefix of a later
row (Table 1's AT row, which the grid cannot run); for tables whose rows are named by authors only
(Table 5), pass --by-position. The values are printed as the paper prints them.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

COLUMNS = {"Nat-Acc.": "clean", "PGD": "pgd", "C&W": "cw", "Deep Fool": "deepfool", "APGD CE": "apgd-ce",
           "APGD T": "apgd-t", "FAB": "fab-t", "Square": "square", "RayS": "rays", "Auto Attack": "autoattack",
           "Worst Case": "worst case"}
METHODS = {"-": "none", "Random": "random", "Uniform": "random", "Hedge": "hedge"}


@dataclass(frozen=True)
class PaperRow:
    model: str                   # as printed, e.g. "WA+ SiLU Gowal et al. (2020)"
    defense: str                 # the grid's plugin label: none, random, hedge
    values: dict[str, str]       # attack label → the printed number


def read_table(paper: Path, number: int) -> tuple[str, list[PaperRow]]:
    """The caption and rows of "Table <number>:" in the paper's markdown."""
    lines = paper.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}:"))
    header_at = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("Model\t"))
    header = lines[header_at].split("\t")
    rows, model = [], ""
    for line in lines[header_at + 1:]:
        if "\t" not in line:
            break
        cells = line.split("\t")
        model = cells[0] or model
        rows.append(PaperRow(model, METHODS[cells[1]], {COLUMNS[h]: v for h, v in zip(header[2:], cells[2:])}))
    return lines[start], rows


def _key(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def match(rows: list[PaperRow], labels: list[str], by_position: bool) -> dict[str, list[PaperRow]]:
    """Grid model label → its paper rows."""
    blocks: list[list[PaperRow]] = []
    for row in rows:
        if row.defense == "none":
            blocks.append([])
        blocks[-1].append(row)
    if by_position:
        if len(blocks) != len(labels):
            raise SystemExit(f"the table has {len(blocks)} models, the grid {len(labels)}: match them by name instead")
        return dict(zip(labels, blocks))
    out = {}
    for label in labels:
        found = [b for b in blocks if _key(b[0].model).startswith(_key(label))]
        if len(found) != 1:
            raise SystemExit(f"grid model {label!r} matches {len(found)} rows of the table; use --by-position")
        out[label] = found[0]
    return out


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _toml_number(printed: str) -> str:
    """The number as printed, less the leading zeros TOML does not allow ("00.83" → "0.83")."""
    return re.sub(r"^0+(?=\d)", "", printed)


def toml_block(source: str, measured_on: str, matched: dict[str, list[PaperRow]]) -> str:
    out = ["[reported]", f'source = "{source}"', f'measured_on = "{measured_on}"', ""]
    for label, block in matched.items():
        out.append(f'[reported.accuracy."{label}"]')
        for row in block:
            cells = ", ".join(f"{_toml_key(k)} = {_toml_number(v)}" for k, v in row.values.items())
            out.append(f"{row.defense} = {{ {cells} }}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paper", type=Path)
    parser.add_argument("--table", type=int, required=True)
    parser.add_argument("--models", type=Path, required=True, help="the grid file whose model labels to match")
    parser.add_argument("--by-position", action="store_true", help="match rows to the grid's models in order")
    parser.add_argument("--measured-on", default="CIFAR-10")
    args = parser.parse_args(argv)
    caption, rows = read_table(args.paper, args.table)
    grid = tomllib.loads(args.models.read_text(encoding="utf-8"))
    labels = [m.get("label") or m.get("name") for m in grid["models"]]
    source = f"Wu et al., {caption.split(':')[0]}"
    sys.stdout.write(toml_block(source, args.measured_on, match(rows, labels, args.by_position)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
