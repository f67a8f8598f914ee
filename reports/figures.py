"""The paper's figures with matplotlib, each drawn at the width of a paper's column (3.3 in) with no text under
7 pt: SVG for HTML (inlined), PDF for LaTeX, PNG for everything else.

Files are written without dates and with a fixed SVG id salt, so the same database gives the same files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: reports are rendered on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from harness_reports.comparisons import Convergence  # noqa: E402
from harness_reports.content import Example, FlipRow, Gaps, HeatMap, ReportContent, Sweep  # noqa: E402

# text.parse_math off: labels are users' plain text, and "$" in one must print as "$", not start mathtext
plt.rcParams.update({"svg.hashsalt": "robustness-harness", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                     "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7, "axes.spines.top": False,
                     "axes.spines.right": False, "lines.markersize": 4, "lines.linewidth": 1.2,
                     "text.parse_math": False})
PARAMETER_NAMES = {"eps_d": "defense radius ε_d", "steps": "defense steps K", "eps": "attack radius ε"}
COLUMN_IN = 3.3          # a column of a two-column paper: every figure is drawn at this width
SMALLEST_PT = 7          # and no text in it is smaller
# Okabe and Ito's colour-blind-safe palette (blue, vermillion, bluish green, orange, sky blue, purple, yellow)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#F0E442")


def radius_text(eps: float) -> str:
    """8/255 where the radius is a whole number of 255ths, as papers write it; the plain number otherwise."""
    scaled = eps * 255
    return f"{round(scaled)}/255" if eps > 0 and abs(scaled - round(scaled)) < 1e-6 else f"{eps:g}"


@dataclass(frozen=True)
class Rendered:
    name: str          # file stem, e.g. "flips-1"
    caption: str
    svg: str           # inline SVG markup for the HTML report


def _save(fig: Figure, out: Path, name: str, caption: str) -> Rendered:
    """PDF for LaTeX, PNG (300 dpi) for slides and markdown, SVG inlined in the HTML; no dates in any."""
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.pdf", format="pdf", metadata={"CreationDate": None, "ModDate": None}, bbox_inches="tight", pad_inches=0.02)
    fig.savefig(out / f"{name}.png", format="png", dpi=300, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.02)
    fig.savefig(out / f"{name}.svg", format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.02)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.02)
    plt.close(fig)
    svg = buffer.getvalue()
    return Rendered(name, caption, svg[svg.index("<svg"):])  # drop the XML prolog and DOCTYPE for inlining


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _signed(value: float) -> str:
    return f"{value:+g}".replace("-", "−")   # a minus sign, not a hyphen


def _legend(ax, columns: int = 2) -> None:
    """Below the axes: it adds height, never width, and never covers data."""
    if ax.get_legend_handles_labels()[0]:  # a partial run may have nothing to plot yet
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=columns,
                  handlelength=1.5, columnspacing=1.0)


def flips_figure(rows: list[FlipRow], model: str) -> Figure:
    """Figure 2a: per defense, one panel of what it did to the bare model's verdicts on each attack's examples.

    FtoT (wrong, then right) rises above the axis and TtoF (right, then wrong) falls below it, each bar
    labelled with its count (a zero shows as "0", not as nothing), and the net FtoT − TtoF under each
    attack's name. Differs from the paper's single grouped panel (eight legend entries) so that it reads
    at column width; FtoF (wrong, then another wrong class) is in flips.tex."""
    attacks = list(dict.fromkeys(r.attack for r in rows))
    defenses = list(dict.fromkeys(r.defense for r in rows))
    lookup = {(r.attack, r.defense): r for r in rows}
    fig, axes = plt.subplots(len(defenses), 1, figsize=(COLUMN_IN, 0.3 + 1.6 * len(defenses)), squeeze=False,
                             layout="constrained")
    x = np.arange(len(attacks))
    top = max([max(r.ftot, r.ttof) for r in rows] + [1.0])
    for ax, defense in zip(axes[:, 0], defenses):
        found = [lookup.get((a, defense)) for a in attacks]
        ftot = np.array([0.0 if r is None else r.ftot for r in found])
        ttof = np.array([0.0 if r is None else r.ttof for r in found])
        ax.bar(x, ftot, 0.6, color=PALETTE[0])
        ax.bar(x, -ttof, 0.6, color=PALETTE[1])
        for xi, up, down in zip(x, ftot, ttof):
            ax.annotate(f"{up:g}", (xi, up), xytext=(0, 1), textcoords="offset points", ha="center", va="bottom",
                        fontsize=SMALLEST_PT)
            ax.annotate(f"{down:g}", (xi, -down), xytext=(0, -1), textcoords="offset points", ha="center", va="top",
                        fontsize=SMALLEST_PT)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylim(-1.45 * top, 1.45 * top)
        ax.set_xlim(-0.6, len(attacks) - 0.4)
        ax.set_title(f"{model}: {defense}", loc="left")
        ax.set_ylabel("examples")
        ax.set_xticks(x, [f"{a}\nnet {_signed(u - d)}" for a, u, d in zip(attacks, ftot, ttof)])
        # direct labels at the left edge instead of a legend
        ax.text(0.0, 1.0, "FtoT ↑", color=PALETTE[0], fontsize=SMALLEST_PT, va="top", ha="left",
                transform=ax.transAxes)
        ax.text(0.0, 0.0, "TtoF ↓", color=PALETTE[1], fontsize=SMALLEST_PT, va="bottom", ha="left",
                transform=ax.transAxes)
    return fig


def gaps_figure(gaps: Gaps) -> Figure:
    """Figure 2b: the distribution of L(false) − L(true) for FtoT (expected > 0) and TtoF (expected < 0)."""
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4), layout="constrained")
    values = [v for v in (*gaps.ftot, *gaps.ttof)]
    bins = np.histogram_bin_edges(values, bins=20) if values else 10
    for data, name, colour in ((gaps.ftot, f"FtoT (n = {len(gaps.ftot)})", PALETTE[0]),
                               (gaps.ttof, f"TtoF (n = {len(gaps.ttof)})", PALETTE[1])):
        if data:
            ax.hist(data, bins=bins, alpha=0.7, color=colour, label=name, edgecolor="black", linewidth=0.4)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("L(false class) − L(true class)")
    ax.set_ylabel("examples")
    ax.set_title(gaps.model)
    _legend(ax)
    return fig


def convergence_figure(ladders: list[Convergence], model: str) -> Figure:
    """The worst case against the adaptive budget (log2), one line per attack and defense."""
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4), layout="constrained")
    for i, c in enumerate(ladders):
        ax.plot(c.factors, c.accuracy, marker="o", color=_colour(i), label=f"{c.attack} vs {c.defense}",
                linestyle="-" if c.converged else "--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("adaptive budget (× the entry's)")
    ax.set_ylabel("worst case (%)")
    ax.set_title(model)
    _legend(ax, columns=1)
    return fig


def sweep_figure(sweep: Sweep) -> Figure:
    """Figure 3: robust accuracy (and, below it, FtoT/TtoF where the defense varies) against the swept value."""
    panels = 2 if sweep.ftot else 1
    fig, axes = plt.subplots(panels, 1, figsize=(COLUMN_IN, 0.3 + 2.5 * panels), squeeze=False, layout="constrained")
    ax = axes[0][0]
    for i, (series, values) in enumerate(sweep.accuracy.items()):
        points = [(v, a) for v, a in zip(sweep.values, values) if a is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=series, color=_colour(i))
    ax.set_xlabel(PARAMETER_NAMES.get(sweep.parameter, sweep.parameter))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{sweep.model}: {sweep.subject}")
    _legend(ax)
    if sweep.ftot:
        ax = axes[1][0]
        for i, series in enumerate(sweep.ftot):
            for field, style in ((sweep.ftot, "-"), (sweep.ttof, "--")):
                points = [(v, c) for v, c in zip(sweep.values, field[series]) if c is not None]
                if points:
                    ax.plot(*zip(*points), style, marker="o", color=_colour(i),
                            label=f"{series} {'FtoT' if field is sweep.ftot else 'TtoF'}")
        ax.set_xlabel(PARAMETER_NAMES.get(sweep.parameter, sweep.parameter))
        ax.set_ylabel("examples")
        _legend(ax)
    return fig


def heatmap_figure(heat: HeatMap) -> Figure:
    """Accuracy over attack radius × defense radius."""
    data = np.array([[np.nan if v is None else v for v in row] for row in heat.accuracy], dtype=float)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, min(4.5, 1.2 + 0.35 * len(heat.eps_a))), layout="constrained")
    image = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto", origin="lower")
    ax.set_xticks(range(len(heat.eps_d)), [radius_text(v) for v in heat.eps_d], rotation=45 if len(heat.eps_d) > 4 else 0)
    ax.set_yticks(range(len(heat.eps_a)), [radius_text(v) for v in heat.eps_a])
    ax.set_xlabel(f"{heat.defense} ε_d")
    ax.set_ylabel(f"{heat.attack} ε")
    for (i, j), value in np.ndenumerate(data):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=SMALLEST_PT,
                    color="white" if value < 50 else "black")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(heat.model)
    return fig


def examples_figure(examples: tuple[Example, ...]) -> Figure:
    """Figure 2c: natural, adversarial and defended images with predictions and SSIM."""
    from PIL import Image

    fig, axes = plt.subplots(len(examples), 3, figsize=(COLUMN_IN, 0.2 + 1.6 * len(examples)), squeeze=False,
                             layout="constrained")
    for row, ex in zip(axes, examples):
        images = [(ex.clean_png, f"natural\n{ex.label}\n"),
                  (ex.adv_png, f"{ex.attack}\n{ex.pred_adv}\nSSIM {ex.ssim_adv:.2f}"),
                  (ex.defended_png, f"{ex.defense}\n{ex.pred_defended}\nSSIM {ex.ssim_defended:.2f}")]
        for ax, (png, title) in zip(row, images):
            image = np.asarray(Image.open(io.BytesIO(png)))
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(title, fontsize=SMALLEST_PT)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{ex.flip}\n{ex.model}", fontsize=SMALLEST_PT)
    return fig


def render_figures(content: ReportContent, out: Path) -> list[Rendered]:
    """Every figure the content calls for, written as PDF and SVG under ``out``."""
    rendered = []
    for i, model in enumerate(dict.fromkeys(r.model for r in content.flips), 1):
        rows = [r for r in content.flips if r.model == model]
        rendered.append(_save(flips_figure(rows, model), out, f"flips-{i}",
                              f"FtoT and TtoF counts per attack on {model} (Figure 2a)."))
    for i, model in enumerate(dict.fromkeys(c.model for c in content.convergence), 1):
        ladders = [c for c in content.convergence if c.model == model]
        rendered.append(_save(convergence_figure(ladders, model), out, f"convergence-{i}",
                              f"Worst case against the adaptive attack's budget on {model}; dashed: not converged."))
    for i, gaps in enumerate(content.gaps, 1):
        rendered.append(_save(gaps_figure(gaps), out, f"lipschitz-{i}",
                              f"Local-Lipschitz gap L(false) − L(true) of the examples a defense flipped on {gaps.model} "
                              "(Figure 2b)."))
    for i, sweep in enumerate(content.sweeps, 1):
        rendered.append(_save(sweep_figure(sweep), out, f"sweep-{i}",
                              f"{sweep.model}: accuracy against {PARAMETER_NAMES.get(sweep.parameter, sweep.parameter)} "
                              f"({sweep.subject}; Figure 3)."))
    for i, heat in enumerate(content.heatmaps, 1):
        rendered.append(_save(heatmap_figure(heat), out, f"heatmap-{i}",
                              f"{heat.model}: accuracy over {heat.attack} ε × {heat.defense} ε_d."))
    if content.examples:
        rendered.append(_save(examples_figure(content.examples), out, "examples",
                              "Natural, adversarial and defended images with predictions and SSIM (Figure 2c)."))
    return rendered
