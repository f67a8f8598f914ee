"""The paper's figures with matplotlib: SVG for HTML (inlined), PDF for LaTeX.

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
plt.rcParams.update({"svg.hashsalt": "robustness-harness", "font.size": 9, "axes.spines.top": False,
                     "axes.spines.right": False, "text.parse_math": False})
PARAMETER_NAMES = {"eps_d": "defense radius ε_d", "steps": "defense steps K", "eps": "attack radius ε"}


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
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.pdf", format="pdf", metadata={"CreationDate": None, "ModDate": None}, bbox_inches="tight")
    fig.savefig(out / f"{name}.svg", format="svg", metadata={"Date": None}, bbox_inches="tight")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    return Rendered(name, caption, svg[svg.index("<svg"):])  # drop the XML prolog and DOCTYPE for inlining


def _legend(ax, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:  # a partial run may have nothing to plot yet
        ax.legend(frameon=False, fontsize=size, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside, never over data


FLIP_BARS = (("ftot", "FtoT", "", 1.0), ("ttof", "TtoF", "//", 0.55), ("net", "FtoT−TtoF", "..", 0.8),
             ("ftof", "FtoF", "xx", 0.35))


def flips_figure(rows: list[FlipRow], model: str) -> Figure:
    """Figure 2a: FtoT, TtoF, FtoT−TtoF and FtoF counts per attack, one group of bars per defense."""
    attacks = list(dict.fromkeys(r.attack for r in rows))
    defenses = list(dict.fromkeys(r.defense for r in rows))
    lookup = {(r.attack, r.defense): r for r in rows}
    bars = len(FLIP_BARS)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(attacks) * max(1, len(defenses))), 2.8))
    width = 0.8 / (bars * len(defenses))
    x = np.arange(len(attacks))
    for j, defense in enumerate(defenses):
        for k, (field, name, hatch, alpha) in enumerate(FLIP_BARS):
            values = [getattr(lookup[(a, defense)], field) if (a, defense) in lookup else 0 for a in attacks]
            offset = (bars * j + k - (bars * len(defenses) - 1) / 2) * width
            ax.bar(x + offset, values, width, label=f"{defense}: {name}", hatch=hatch, color=f"C{j}", alpha=alpha,
                   edgecolor="black", linewidth=0.4)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, attacks, rotation=30, ha="right")
    ax.set_ylabel("examples (mean over repeats)")
    ax.set_title(model)
    _legend(ax, 7)
    return fig


def gaps_figure(gaps: Gaps) -> Figure:
    """Figure 2b: the distribution of L(false) − L(true) for FtoT (expected > 0) and TtoF (expected < 0)."""
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    values = [v for v in (*gaps.ftot, *gaps.ttof)]
    bins = np.histogram_bin_edges(values, bins=20) if values else 10
    for data, name, color in ((gaps.ftot, f"FtoT (n = {len(gaps.ftot)})", "C0"), (gaps.ttof, f"TtoF (n = {len(gaps.ttof)})", "C3")):
        if data:
            ax.hist(data, bins=bins, alpha=0.6, color=color, label=name, edgecolor="black", linewidth=0.4)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("L(false class) − L(true class)")
    ax.set_ylabel("examples")
    ax.set_title(gaps.model)
    _legend(ax, 7)
    return fig


def convergence_figure(ladders: list[Convergence], model: str) -> Figure:
    """The worst case against the adaptive budget (log2), one line per attack and defense."""
    fig, ax = plt.subplots(figsize=(4.8, 2.8))
    for i, c in enumerate(ladders):
        ax.plot(c.factors, c.accuracy, marker="o", color=f"C{i % 10}", label=f"{c.attack} vs {c.defense}",
                linestyle="-" if c.converged else "--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("adaptive budget (× the entry's)")
    ax.set_ylabel("worst case (%)")
    ax.set_title(model)
    _legend(ax, 7)
    return fig


def sweep_figure(sweep: Sweep) -> Figure:
    """Figure 3: robust accuracy (and FtoT/TtoF where the defense varies) against the swept value."""
    panels = 2 if sweep.ftot else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.0), squeeze=False, layout="constrained")
    ax = axes[0][0]
    for i, (series, values) in enumerate(sweep.accuracy.items()):
        points = [(v, a) for v, a in zip(sweep.values, values) if a is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=series, color=f"C{i % 10}")
    ax.set_xlabel(PARAMETER_NAMES.get(sweep.parameter, sweep.parameter))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{sweep.model}: {sweep.subject}")
    _legend(ax, 7)
    if sweep.ftot:
        ax = axes[0][1]
        for i, series in enumerate(sweep.ftot):
            for field, style in ((sweep.ftot, "-"), (sweep.ttof, "--")):
                points = [(v, c) for v, c in zip(sweep.values, field[series]) if c is not None]
                if points:
                    ax.plot(*zip(*points), style, marker="o", color=f"C{i % 10}",
                            label=f"{series} {'FtoT' if field is sweep.ftot else 'TtoF'}")
        ax.set_xlabel(PARAMETER_NAMES.get(sweep.parameter, sweep.parameter))
        ax.set_ylabel("examples")
        _legend(ax, 6)
    return fig


def heatmap_figure(heat: HeatMap) -> Figure:
    """Accuracy over attack radius × defense radius."""
    data = np.array([[np.nan if v is None else v for v in row] for row in heat.accuracy], dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(heat.eps_d), 1.0 + 0.6 * len(heat.eps_a)))
    image = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto", origin="lower")
    ax.set_xticks(range(len(heat.eps_d)), [radius_text(v) for v in heat.eps_d])
    ax.set_yticks(range(len(heat.eps_a)), [radius_text(v) for v in heat.eps_a])
    ax.set_xlabel(f"{heat.defense} ε_d")
    ax.set_ylabel(f"{heat.attack} ε")
    for (i, j), value in np.ndenumerate(data):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 50 else "black")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(heat.model)
    return fig


def examples_figure(examples: tuple[Example, ...]) -> Figure:
    """Figure 2c: natural, adversarial and defended images with predictions and SSIM."""
    from PIL import Image

    fig, axes = plt.subplots(len(examples), 3, figsize=(5.4, 1.9 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        images = [(ex.clean_png, f"natural: {ex.label}"), (ex.adv_png, f"{ex.attack}: {ex.pred_adv}\nSSIM {ex.ssim_adv:.2f}"),
                  (ex.defended_png, f"{ex.defense}: {ex.pred_defended}\nSSIM {ex.ssim_defended:.2f}")]
        for ax, (png, title) in zip(row, images):
            image = np.asarray(Image.open(io.BytesIO(png)))
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{ex.kind}\n{ex.model}", fontsize=7)
    fig.tight_layout()
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
