"""What a report shows, computed from the results database alone (no plugin, model or data needed).

Everything here is plain data (dataclasses of numbers and strings), so the HTML, LaTeX and markdown
templates only lay it out, and a report rendered a year later from the same database is the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.analysis.aggregate import WORST_ADAPTIVE, WORST_TRANSFER, cells, worst_columns
from harness.analysis.analytics import flip_counts
from harness.analysis.notices import Notice
from harness.analysis.pairing import PairedRow
from harness.analysis.stats import wilson
from harness.api.cost import Passes, ratio
from harness.api.interfaces import Role
from harness.grid.presets import HONEST, PRESETS
from harness.storage.queries import lipschitz_gaps
from harness.storage.records import RunRecord
from harness.storage.store import Store
from harness_reports.comparisons import (
    Convergence,
    adaptive_gains,
    convergence,
    defense_pairs,
    transfer_against_adaptive,
)
from harness_reports.leaderboard import LeaderRow, leaderboard
from harness_reports.naming import COLUMN_NAMES, display_names
from harness_reports.reproduction import Reproduction, reproduction
from harness_reports.warnings import automatic_checks


@dataclass(frozen=True)
class Cell:
    """One accuracy: mean and standard deviation over repeats (in %), its 95 % Wilson interval, bold or not."""

    mean: float
    std: float
    repeats: int
    n: int               # examples per repeat that the accuracy is taken over
    low: float
    high: float
    best: bool = False


@dataclass(frozen=True)
class Row:
    defense: str
    cells: tuple[Cell | None, ...]


@dataclass(frozen=True)
class Group:
    model: str
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Table:
    """The paper's layout: rows grouped by model, one row per defense; one column per attack, then worst cases."""

    columns: tuple[str, ...]        # display names
    keys: tuple[str, ...]           # attack labels or worst-case keys, as stored
    groups: tuple[Group, ...]
    unevaluated: tuple[str, ...] = ()   # keys of columns the grid could not fill (no adaptive attack)


@dataclass(frozen=True)
class AdaptiveRow:
    model: str
    defense: str
    transfer: Cell | None
    adaptive: Cell | None

    @property
    def change(self) -> float | None:
        return None if self.transfer is None or self.adaptive is None else self.adaptive.mean - self.transfer.mean


@dataclass(frozen=True)
class FlipRow:
    model: str
    attack: str
    defense: str
    ftot: float            # mean count over repeats
    ttof: float
    ftof: float            # wrong, then a different wrong class (the paper's FtoF)
    n: int

    @property
    def net(self) -> float:
        """FtoT − TtoF: the defense's net gain, in examples."""
        return self.ftot - self.ttof


@dataclass(frozen=True)
class Gaps:
    """Local-Lipschitz gaps L(false) − L(true) of the flipped examples of one model (Figure 2b)."""

    model: str
    ftot: tuple[float, ...]
    ttof: tuple[float, ...]


@dataclass(frozen=True)
class Sweep:
    """A grid that varies one parameter: accuracy (and flips) per series against the swept value (Figure 3)."""

    model: str
    parameter: str                   # "eps_d", "steps" or "eps"
    subject: str                     # what varies: "defense hedge" or "attack pgd"
    values: tuple[float, ...]
    labels: tuple[str, ...]          # the entry label at each value
    accuracy: dict[str, tuple[float | None, ...]]   # series (attack or defense label) → accuracy per value
    ftot: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    ttof: dict[str, tuple[float | None, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class HeatMap:
    """Accuracy over attack radius ε_a (rows) × defense radius ε_d (columns), where a grid varies both."""

    model: str
    attack: str
    defense: str
    eps_a: tuple[float, ...]
    eps_d: tuple[float, ...]
    accuracy: tuple[tuple[float | None, ...], ...]


@dataclass(frozen=True)
class Example:
    model: str
    attack: str
    defense: str
    idx: int
    flip: str              # "FtoT" or "TtoF"
    label: str
    pred_adv: str
    pred_defended: str
    ssim_adv: float
    ssim_defended: float
    clean_png: bytes
    adv_png: bytes
    defended_png: bytes


@dataclass(frozen=True)
class UnitFact:
    model: str
    attack: str
    defenses: str
    repeat: int
    done: int
    total: int
    seconds: float
    counted: Passes | None = None   # passes made per example done (harness.run.counting); None before they were counted
    floor: Passes | None = None     # what its attack's loop and its scored draws could not avoid, per example

    @property
    def ratio(self) -> float | None:
        return ratio(self.counted, self.floor) if self.counted is not None and self.floor is not None else None


@dataclass(frozen=True)
class PluginFact:
    """One grid entry as it ran: the name the tables use, its plugin, the code that computed it, its parameters."""

    kind: str            # "model", "attack", "defense" or "dataset"
    shown: str           # the display name, with the entry's label in brackets where they differ
    plugin: str
    code: str            # distribution and version, and the digest of the plugin's source
    params: str          # every resolved parameter, "k = v, ..."


@dataclass(frozen=True)
class Facts:
    run_id: str
    config_path: str
    config_text: str
    dataset: str
    dataset_caveat: str | None
    n_examples: int
    norm: str
    eps: float
    repeats: int
    device: str
    precision: str
    preset: str                # "honest", or "paper": the released code's settings (harness.grid.presets)
    adaptive_budgets: tuple[str, ...]   # every attack through a defense, with the budget it ran at
    votes: str                 # how randomised defenses were scored: the draws per vote, and how many it took
    git_commit: str
    versions: dict[str, str]
    started: float | None
    ended: float | None
    units: tuple[UnitFact, ...]
    plugins: tuple[PluginFact, ...] = ()

    @property
    def wall_seconds(self) -> float:
        return sum(u.seconds for u in self.units)


@dataclass(frozen=True)
class ReportContent:
    facts: Facts | None = None
    main: Table | None = None
    std: Table | None = None
    adaptive: tuple[AdaptiveRow, ...] = ()
    has_adaptive: bool = False
    flips: tuple[FlipRow, ...] = ()
    paired: tuple[PairedRow, ...] = ()             # each test-time defense against the reference
    transfer_adaptive: tuple[PairedRow, ...] = ()  # each defense's transfer worst case against its adaptive one
    convergence: tuple[Convergence, ...] = ()      # adaptive budget ladders
    leaderboard: tuple[LeaderRow, ...] = ()        # every model × defense ranked by its adaptive worst case
    verdicts: tuple[str, ...] = ()                 # what the adaptive evaluation says of each test-time defense
    gaps: tuple[Gaps, ...] = ()
    sweeps: tuple[Sweep, ...] = ()
    heatmaps: tuple[HeatMap, ...] = ()
    examples: tuple[Example, ...] = ()
    warnings: tuple[Notice, ...] = ()   # harness.analysis.notices: a stable id and a sentence
    missing: tuple[str, ...] = ()       # what a partial or empty run lacks
    reproduction: Reproduction | None = None   # the paper's reported numbers beside the measured ones
    spread: str = HONEST.spread_name           # what the std table holds (the preset decides, see harness.grid.presets)
    preset: str = ""                           # the title line's "preset NAME: what it changes"


def empty_content(reason: str) -> ReportContent:
    return ReportContent(missing=(reason,))


def _cell(mean: float, std: float, repeats: int, n: int) -> Cell:
    low, high = wilson(mean / 100, n)
    return Cell(mean=mean, std=std, repeats=repeats, n=n, low=low * 100, high=high * 100)


def _table(cells: pd.DataFrame, models: list[str], defenses: list[str], keys: list[str], names: dict[str, str], *,
           std: bool, unevaluated: tuple[str, ...] = ()) -> Table:
    lookup = {(r.model, r.defense, r.key): r for r in cells.itertuples()}
    groups = []
    for model in models:
        raw = [[lookup.get((model, d, k)) for k in keys] for d in defenses]
        built: list[list[Cell | None]] = [[None if r is None else _cell(r.mean, r.std, int(r.repeats), int(r.n))
                                           for r in row] for row in raw]
        if not std:  # bold the best (highest, at the printed precision) of each column within the model's group
            for j in range(len(keys)):
                present = [round(row[j].mean, 2) for row in built if row[j] is not None]
                if len(present) >= 2:
                    top = max(present)
                    for row in built:
                        if row[j] is not None and round(row[j].mean, 2) == top:
                            row[j] = Cell(**{**row[j].__dict__, "best": True})
        groups.append(Group(model, tuple(Row(names.get(d, d), tuple(row)) for d, row in zip(defenses, built))))
    return Table(tuple(COLUMN_NAMES.get(k, names.get(k, k)) for k in keys), tuple(keys), tuple(groups), unevaluated)


def _units(store: Store, run_id: str) -> tuple[UnitFact, ...]:
    units = store.units(run_id)
    if units.empty:
        return ()
    def per_example(row: Any, kind: str) -> Passes | None:
        forward, backward = getattr(row, f"{kind}_forward", None), getattr(row, f"{kind}_backward", None)
        if forward is None or backward is None or pd.isna(forward) or not row.done:
            return None
        return Passes(forward / row.done, backward / row.done)

    return tuple(UnitFact(r.model, r.attack, ", ".join(json.loads(r.defenses)), int(r.repeat), int(r.done),
                          int(r.total), float(r.seconds), per_example(r, "counted"), per_example(r, "floor"))
                 for r in units.itertuples())


def _facts(store: Store, run: RunRecord) -> Facts:
    return Facts(
        run_id=run.run_id, config_path=run.config_path, config_text=run.config_text, dataset=run.dataset_display,
        dataset_caveat=run.dataset_caveat, n_examples=run.n_examples, norm=run.norm, eps=run.eps,
        repeats=run.repeats, device=run.device, precision=run.precision, preset=run.preset,
        adaptive_budgets=_budgets(run), votes=_votes(store, run),
        git_commit=run.harness_commit or "(unknown)", versions=json.loads(run.versions), started=run.started,
        ended=run.ended, units=_units(store, run.run_id), plugins=_plugin_facts(run))


def _plugin_facts(run: RunRecord) -> tuple[PluginFact, ...]:
    """Every entry with its resolved parameters (the run's plugins record) and its code (the run's identity)."""
    identity = json.loads(run.identity)
    recorded = json.loads(run.plugins)
    facts = []
    for kind, key in (("dataset", "dataset"), ("model", "models"), ("attack", "attacks"), ("defense", "defenses")):
        coded = identity.get(key) or []
        coded = [coded] if isinstance(coded, dict) else coded
        code_of = {entry["label"]: entry.get("code") or {} for entry in coded}
        for entry in recorded.get(key) or coded:   # the dataset's parameters are recorded with its identity only
            label = entry["label"]
            shown = run.dataset_display if kind == "dataset" else entry.get("display_name") or label
            code = code_of.get(label, {})
            facts.append(PluginFact(
                kind=kind, shown=shown if shown == label else f"{shown} [{label}]", plugin=entry["plugin"],
                code=" ".join(filter(None, (code.get("distribution"), code.get("version"),
                                            code.get("source") and f"(source {code['source'][:12]})"))) or "—",
                params=", ".join(f"{k} = {v}" for k, v in entry.get("params", {}).items()) or "defaults"))
    return tuple(facts)


def _votes(store: Store, run: RunRecord) -> str:
    """The votes as they were taken: up to ``votes`` draws, and how many the sequential vote needed on average."""
    randomized = [d["label"] for d in run.entries("defenses") if d.get("randomized")]
    if not randomized:
        return "no randomised defense: one prediction each"
    made = store.mean_draws(run.run_id, randomized)
    taken = f"; {made:.2f} draws on average (a vote stops once its majority is certain)" if made is not None else ""
    adaptive = json.loads(run.identity).get("adaptive_votes")
    text = f"majority of up to {run.votes} draw{'s' if run.votes > 1 else ''} per randomised prediction{taken}"
    if adaptive:
        text += (f"; the adaptive columns, not part of the released code, are scored and checked by the honest "
                 f"majority of up to {adaptive} draws")
    return text


def _budgets(run: RunRecord) -> tuple[str, ...]:
    """Each attack through a defense, with every parameter it ran with (the adaptive budget actually used)."""
    through = set(run.adaptive_attacks)
    return tuple(f"{a['label']} ({a['plugin']}): " + ", ".join(f"{k} = {v}" for k, v in sorted(a["params"].items())
                                                              if k != "target")
                 for a in run.entries("attacks") if a["label"] in through)


def _missing(store: Store, run: RunRecord, units: tuple[UnitFact, ...]) -> list[str]:
    notes = []
    if not units:
        notes.append(f"run {run.run_id} has no work units recorded: it stopped before any work started.")
    for u in units:
        if u.done < u.total:
            notes.append(f"{u.model} × {u.attack} (repeat {u.repeat}, defenses {u.defenses}): "
                         f"{u.done} of {u.total} examples done" + (" — not started" if u.done == 0 else ""))
    if notes and units:
        notes.append("Cells of unfinished units cover only the finished examples; worst cases count only examples "
                     "evaluated under every attack. Resume with: harness run --grid " + run.config_path)
    return notes


def _adaptive_rows(cells: pd.DataFrame, models: list[str], defenses: list[str],
                   names: dict[str, str]) -> tuple[AdaptiveRow, ...]:
    lookup = {(r.model, r.defense, r.key): _cell(r.mean, r.std, int(r.repeats), int(r.n)) for r in cells.itertuples()}
    return tuple(AdaptiveRow(m, names.get(d, d), lookup.get((m, d, WORST_TRANSFER)), lookup.get((m, d, WORST_ADAPTIVE)))
                 for m in models for d in defenses)


def _flips(store: Store, run: RunRecord, names: dict[str, str], order: list[str]) -> tuple[FlipRow, ...]:
    counts = flip_counts(store, run.run_id)
    if counts.empty:
        return ()
    rank = {label: i for i, label in enumerate(order)}  # grid order: models, then attacks, then defenses
    counts = counts.sort_values(["model", "attack", "defense"], key=lambda col: col.map(rank), kind="stable")
    attacked = ~counts.attack.isin(run.baseline_attacks)
    counts = counts[attacked] if attacked.any() else counts
    mean = counts.groupby(["model", "attack", "defense"], sort=False)[["FtoT", "TtoF", "FtoF", "n"]].mean().reset_index()
    return tuple(FlipRow(r.model, names.get(r.attack, r.attack), names.get(r.defense, r.defense), float(r.FtoT),
                         float(r.TtoF), float(r.FtoF), int(r.n)) for r in mean.itertuples())


def _gaps(store: Store, run: RunRecord) -> tuple[Gaps, ...]:
    frame = lipschitz_gaps(store, run.run_id)
    return tuple(Gaps(model, tuple(group[group.flip == "FtoT"].gap), tuple(group[group.flip == "TtoF"].gap))
                 for model, group in frame.groupby("model", sort=False))


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _families(entries: list[dict[str, Any]], parameter_names: tuple[str, ...]) -> list[tuple[str, str, list[dict]]]:
    """Sweeps: groups of two or more entries of one plugin that differ only in one of ``parameter_names``
    (a numeric one). One plugin may give several, e.g. Hedge entries varying K at one ε_d and ε_d at one K."""
    out = []
    for plugin in dict.fromkeys(e["plugin"] for e in entries):
        family = [e for e in entries if e["plugin"] == plugin]
        settings = [e["params"] | {"eps": e.get("eps")} for e in family]
        for parameter in parameter_names:
            groups: dict[str, list[dict]] = {}
            for entry, setting in zip(family, settings):
                if _numeric(setting.get(parameter)):
                    rest = {k: v for k, v in setting.items() if k != parameter}
                    groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(entry)
            out += [(plugin, parameter, group) for group in groups.values()
                    if len({_value(e, parameter) for e in group}) >= 2]
    return out


def _value(entry: dict[str, Any], parameter: str) -> float:
    return float(entry["eps"] if parameter == "eps" else entry["params"][parameter])


def _sweeps(cells: pd.DataFrame, flips: tuple[FlipRow, ...], models: list[str], run: RunRecord,
            worst_keys: list[str], names: dict[str, str]) -> tuple[list[Sweep], list[HeatMap]]:
    acc = {(r.model, r.defense, r.key): float(r.mean) for r in cells.itertuples()}
    def n(label: str) -> str:
        return names.get(label, label)

    flip = {(f.model, f.attack, f.defense): f for f in flips}
    plugins = {kind: run.entries(kind) for kind in ("attacks", "defenses")}
    attacks = [a for a in plugins["attacks"] if a.get("role") != Role.BASELINE.value]
    defenses = plugins["defenses"]
    sweeps, heatmaps = [], []
    defense_families = _families([d for d in defenses if d.get("role") != Role.REFERENCE.value], ("eps_d", "steps"))
    attack_families = _families(attacks, ("eps",))
    for model in models:
        for plugin, parameter, family in defense_families:
            family = sorted(family, key=lambda e: _value(e, parameter))
            series = [a["label"] for a in plugins["attacks"]] + worst_keys
            sweeps.append(Sweep(
                model=model, parameter=parameter, subject=f"defense {plugin}",
                values=tuple(_value(e, parameter) for e in family), labels=tuple(e["label"] for e in family),
                accuracy={COLUMN_NAMES.get(s, n(s)): tuple(acc.get((model, e["label"], s)) for e in family) for s in series},
                ftot={n(a["label"]): tuple(getattr(flip.get((model, n(a["label"]), n(e["label"]))), "ftot", None)
                                           for e in family) for a in attacks},
                ttof={n(a["label"]): tuple(getattr(flip.get((model, n(a["label"]), n(e["label"]))), "ttof", None)
                                           for e in family) for a in attacks}))
        for plugin, parameter, family in attack_families:
            family = sorted(family, key=lambda e: _value(e, parameter))
            sweeps.append(Sweep(
                model=model, parameter=parameter, subject=f"attack {plugin}",
                values=tuple(_value(e, parameter) for e in family), labels=tuple(e["label"] for e in family),
                accuracy={n(d["label"]): tuple(acc.get((model, d["label"], e["label"])) for e in family) for d in defenses}))
            for d_plugin, d_parameter, d_family in defense_families:
                if d_parameter != "eps_d":
                    continue
                d_family = sorted(d_family, key=lambda e: _value(e, "eps_d"))
                heatmaps.append(HeatMap(
                    model=model, attack=plugin, defense=d_plugin,
                    eps_a=tuple(_value(e, "eps") for e in family), eps_d=tuple(_value(e, "eps_d") for e in d_family),
                    accuracy=tuple(tuple(acc.get((model, d["label"], a["label"])) for d in d_family) for a in family)))
    return sweeps, heatmaps


def _examples(store: Store, run: RunRecord, names: dict[str, str], per_flip: int = 3) -> tuple[Example, ...]:
    """A few FtoT and TtoF examples (Figure 2c): the defense changed the bare model's verdict on them."""
    reference, classes = run.reference_defense, json.loads(run.classes)
    if reference is None:
        return ()
    baselines = run.baseline_attacks
    rows = [r for r in store.db.query(
        "SELECT e.* FROM examples e JOIN units u ON u.run_id = e.run_id AND u.unit_key = e.unit_key "
        "WHERE e.run_id = ? AND e.defense != ? AND u.adaptive = 0 "
        "ORDER BY e.model, e.attack, e.defense, e.repeat, e.idx", [run.run_id, reference])
        if r["attack"] not in baselines]
    def name(c: int) -> str:
        return classes[c] if 0 <= c < len(classes) else str(c)

    chosen: dict[str, list[Example]] = {"FtoT": [], "TtoF": []}
    seen: set[tuple[str, int]] = set()  # one image once: repeats and attacks often flip the same example
    for r in rows:
        flip = ("FtoT" if r["pred_adv"] != r["label"] and r["pred_defended"] == r["label"] else
                "TtoF" if r["pred_adv"] == r["label"] and r["pred_defended"] != r["label"] else None)
        if flip is None or len(chosen[flip]) >= per_flip or (r["model"], r["idx"]) in seen:
            continue
        seen.add((r["model"], r["idx"]))
        chosen[flip].append(Example(r["model"], names.get(r["attack"], r["attack"]), names.get(r["defense"], r["defense"]), r["idx"], flip, name(r["label"]),
                                    name(r["pred_adv"]), name(r["pred_defended"]), r["ssim_adv"], r["ssim_defended"],
                                    r["clean_png"], r["adv_png"], r["defended_png"]))
    return tuple(chosen["FtoT"] + chosen["TtoF"])


def _columns(run: RunRecord) -> tuple[list[str], tuple[str, ...]]:
    """The main table's column keys (the clean baseline, the attacks, the worst cases), and the worst-case
    columns the grid cannot fill."""
    worst_sets = worst_columns(run)
    baselines = run.baseline_attacks
    keys = baselines + [a for a in run.labels("attacks") if a not in baselines] + list(worst_sets)
    return keys, tuple(k for k, over in worst_sets.items() if over is None)


def main_table(store: Store, run: RunRecord) -> Table | None:
    """The report's main table (accuracy, Wilson interval, best in bold), or None before any result."""
    table_cells = cells(store, run)
    if table_cells.empty:
        return None
    keys, unevaluated = _columns(run)
    return _table(table_cells, run.labels("models"), run.labels("defenses"), keys, display_names(run), std=False,
                  unevaluated=unevaluated)


def build_content(store: Store, run_id: str | None = None) -> ReportContent:
    """Everything a report shows, for one run (the latest when ``run_id`` is None)."""
    if not store.runs():
        return empty_content(f"{store.path} holds no runs yet: run a grid first (harness run --grid FILE).")
    run = store.run(run_id)
    facts = _facts(store, run)
    models, defenses, attacks = run.labels("models"), run.labels("defenses"), run.labels("attacks")
    keys, unevaluated = _columns(run)
    worst = list(worst_columns(run))
    table_cells = cells(store, run)
    missing = _missing(store, run, facts.units)
    if table_cells.empty:
        missing.append("no results are stored for this run yet, so there is nothing to tabulate.")
    names = display_names(run)
    flips = _flips(store, run, names, models + attacks + defenses)
    sweeps, heatmaps = _sweeps(table_cells, flips, models, run, worst, names)
    has_adaptive = WORST_ADAPTIVE in worst
    test_time = run.test_time_defenses
    empty = table_cells.empty
    pairs = [] if empty else defense_pairs(store, run, names)
    transfer_adaptive = [] if empty else transfer_against_adaptive(store, run, names)
    ladders = [] if empty else convergence(store, run, names)
    gains = [] if empty else adaptive_gains(store, run, names)
    board = [] if empty else leaderboard(store, run, ladders)
    reproduced = reproduction(run, table_cells, names)
    return ReportContent(
        spread=PRESETS[run.preset].spread_name,
        preset=f"{run.preset} preset: {PRESETS[run.preset].description}",
        facts=facts,
        main=None if table_cells.empty else _table(table_cells, models, defenses, keys, names, std=False,
                                                   unevaluated=unevaluated),
        std=None if table_cells.empty else _table(table_cells, models, defenses, keys, names, std=True,
                                                  unevaluated=unevaluated),
        adaptive=_adaptive_rows(table_cells, models, test_time, names) if has_adaptive else (),
        has_adaptive=has_adaptive, flips=flips, paired=tuple(pairs), transfer_adaptive=tuple(transfer_adaptive),
        convergence=tuple(ladders), leaderboard=tuple(board), verdicts=tuple(v for _, v in gains), gaps=_gaps(store, run), sweeps=tuple(sweeps),
        heatmaps=tuple(heatmaps), examples=_examples(store, run, names),
        warnings=tuple(automatic_checks(store, run, table_cells, names, pairs, ladders, reproduced)),
        missing=tuple(missing), reproduction=reproduced)
