"""Figures of a PASER selection report, drawn headless (matplotlib Agg, no pyplot state), deterministic for a
seed, and written as 256-colour PNGs.

Every per-cluster figure lists the clusters top to bottom in selection order (descending CDS), so the
figures read side by side. Figures that need per-row data (`SelectionReport.details`) are skipped when it
is absent.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

#: The instruction map draws at most this many rows (a seeded sample; every cluster keeps its share).
MAP_MAX_POINTS = 20_000
#: The JSD figure marks at most this many selected rows as dots.
MAX_SELECTED_DOTS = 3_000
STATUS_COLOURS = {"selected": "#2e7d32", "rejected_inconsistent": "#c62828", "not_reached": "#cfd8dc"}
_WHITE_EDGE = [patheffects.withStroke(linewidth=3, foreground="white")]


def palette(k: int) -> List[tuple]:
    """K distinct colours: tab10's strong colours first, then tab20's light ones, then tab20b and tab20c."""
    tab20 = colormaps["tab20"].colors
    colours = [*tab20[0::2], *tab20[1::2], *colormaps["tab20b"].colors, *colormaps["tab20c"].colors]
    return [colours[i % len(colours)] for i in range(k)]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _order(report) -> List[int]:
    """Cluster ids in selection order: descending CDS, then id."""
    return [c.cluster for c in sorted(report.clusters, key=lambda c: (-c.cds, c.cluster))]


def _per_cluster_height(k: int) -> float:
    return max(3.2, 1.4 + 0.32 * k)


def _seed(report) -> int:
    return int(report.config.get("seed", 0) or 0)


def principal_plane(coordinates: np.ndarray) -> tuple:
    """Project rows onto the top two principal axes (signs fixed: largest loading positive).

    Euclidean distance between diffusion coordinates is the diffusion distance, so this is the best
    2-D linear view of what the clustering sees. Returns (points (N, 2), explained variance ratios (2,)).
    """
    x = np.asarray(coordinates, dtype=np.float64)
    x = x - x.mean(axis=0)
    if x.shape[1] < 2:
        x = np.hstack([x, np.zeros((len(x), 2 - x.shape[1]))])
    values, vectors = np.linalg.eigh(x.T @ x)
    top = np.argsort(-values, kind="stable")[:2]
    axes = vectors[:, top]
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)
    total = values.sum()
    return x @ axes, (values[top] / total if total > 0 else np.zeros(2))


def cluster_map(report) -> Figure:
    """2-D map of the instructions coloured by cluster, selected rows ringed, cluster ids at their centres."""
    details = report.details
    labels = details.labels
    points, explained = principal_plane(details.coordinates)
    selected = details.status == "selected"
    rng = np.random.default_rng(_seed(report))
    shown = rng.permutation(len(labels))[:MAP_MAX_POINTS]
    colours = palette(report.k)
    sizes = {c.cluster: c.size for c in report.clusters}
    figure = _new_figure(9.5, 6.5)
    ax = figure.add_subplot()
    point_size = float(np.clip(3000 / np.sqrt(len(shown)), 4, 40))
    ax.scatter(points[shown, 0], points[shown, 1], s=point_size, c=[colours[l] for l in labels[shown]],
               alpha=0.55, linewidths=0, rasterized=True)
    ringed = shown[selected[shown]]
    ax.scatter(points[ringed, 0], points[ringed, 1], s=point_size * 1.6, facecolors="none", edgecolors="black",
               linewidths=0.6)
    for c in range(report.k):
        members = labels == c
        if members.any():
            x, y = np.median(points[members], axis=0)
            ax.text(x, y, str(c), ha="center", va="center", fontsize=13, fontweight="bold", path_effects=_WHITE_EDGE)
    handles = [Line2D([], [], ls="", marker="o", color=colours[c], label=f"{c}  ({sizes.get(c, 0)} rows)")
               for c in range(report.k)]
    handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="black",
                          label=f"selected ({int(selected.sum())})"))
    ax.legend(handles=handles, title="cluster", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              ncols=1 if len(handles) <= 17 else 2, fontsize=8, title_fontsize=9)
    ax.set_xlabel(f"diffusion-coordinate PC 1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"diffusion-coordinate PC 2 ({explained[1]:.0%} of variance)")
    note = f", {len(shown)} of {len(labels)} rows drawn" if len(shown) < len(labels) else ""
    ax.set_title(f"Instructions in diffusion space: K = {report.k} clusters{note}")
    ax.grid(alpha=0.2)
    return figure


def cds_allocation(report) -> Figure:
    """Per-cluster CDS beside the budget allocated and filled, in the report's budget unit."""
    order = _order(report)
    stats = {c.cluster: c for c in report.clusters}
    y = np.arange(len(order))
    figure = _new_figure(10, _per_cluster_height(len(order)))
    left, right = figure.subplots(1, 2, sharey=True, width_ratios=[1, 1.6])
    colours = palette(report.k)
    left.barh(y, [stats[c].cds for c in order], color=[colours[c] for c in order], edgecolor="black", linewidth=0.4)
    left.set_xlabel("CDS = mean JSD in cluster (bits)")
    left.set_yticks(y, [f"cluster {c}  ({stats[c].size} rows)" for c in order])
    left.invert_yaxis()
    left.set_title("Capability degradation")
    height = 0.38
    allocated = [stats[c].allocated for c in order]
    selected = [stats[c].filled for c in order]
    unit = report.budget_unit
    right.barh(y - height / 2, allocated, height, color="#90a4ae", label="allocated (Eq. 6)")
    right.barh(y + height / 2, selected, height, color=STATUS_COLOURS["selected"], label="selected")
    for yi, a, s in zip(y, allocated, selected):
        right.text(max(a, s), yi, f" {s}", va="center", fontsize=8)
    right.set_xlabel(unit)
    right.set_xlim(0, max(max(allocated + selected), 1) * 1.15)
    filled = sum(selected)
    right.set_title(f"Budget: {filled} of B = {report.budget} {unit} selected ({report.num_selected} rows)"
                    if unit != "rows" else f"Budget: {report.num_selected} of B = {report.budget} rows selected")
    figure.legend(*right.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    return figure


def jsd_distribution(report) -> Figure:
    """Box plot of the per-row JSD in each cluster, the CDS as a diamond and the selected rows as dots."""
    details = report.details
    order = _order(report)
    labels, jsd, selected = details.labels, details.jsd, details.status == "selected"
    scored = np.isfinite(jsd)
    data = [jsd[(labels == c) & scored] for c in order]
    colours = palette(report.k)
    figure = _new_figure(9, _per_cluster_height(len(order)))
    ax = figure.add_subplot()
    y = np.arange(len(order))
    boxes = ax.boxplot([d if d.size else [np.nan] for d in data], positions=y, orientation="horizontal",
                       widths=0.6, patch_artist=True, showfliers=True,
                       flierprops={"marker": "o", "markersize": 2.5, "markerfacecolor": "#78909c",
                                   "markeredgecolor": "none"},
                       medianprops={"color": "black"})
    for patch, c in zip(boxes["boxes"], order):
        patch.set_facecolor(colours[c])
        patch.set_alpha(0.6)
    cds = {c.cluster: c.cds for c in report.clusters}
    ax.scatter([cds[c] for c in order], y, marker="D", s=30, color="white", edgecolors="black", zorder=3,
               label="CDS (mean)")
    rng = np.random.default_rng(_seed(report))
    chosen = np.flatnonzero(selected & scored)
    chosen = np.sort(rng.permutation(chosen)[:MAX_SELECTED_DOTS])
    position = {c: i for i, c in enumerate(order)}
    rows = np.array([position[l] for l in labels[chosen]], dtype=np.float64)
    ax.scatter(jsd[chosen], rows + rng.uniform(-0.25, 0.25, len(chosen)), s=6, color=STATUS_COLOURS["selected"],
               alpha=0.6, zorder=2, label="selected rows")
    ax.set_yticks(y, [f"cluster {c}  ({d.size})" for c, d in zip(order, data)])
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlabel("JSD(original ‖ pruned), mean over response tokens (bits)")
    ax.set_title("Per-row divergence by cluster (in selection order)")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return figure


def k_curve(report) -> Figure:
    """The NMF relative-error curve over K, and the cut each extra cluster brings against the elbow tolerance.

    The cut from K−1 to K is a fraction of the error at the smallest K tried, and K is the smallest K after
    which every cut stays below the tolerance: `paser_hf.selection.clustering.elbow`.
    """
    curve = {int(k): float(v) for k, v in report.k_curve.items()}
    clustering = report.clustering or {}
    chosen = int(clustering.get("k_requested", report.k))
    tolerance = float(report.config.get("elbow_tolerance", 0.05))
    if len(curve) < 2:
        figure = _new_figure(7, 3)
        ax = figure.add_subplot()
        ax.set_axis_off()
        reason = ("fixed by the user (num_clusters)" if report.config.get("num_clusters") is not None
                  else "the only K the row count allows")
        ax.text(0.5, 0.5, f"K = {report.k}: {reason};\nno error curve was computed.", ha="center", va="center",
                fontsize=12, transform=ax.transAxes)
        return figure
    ks = sorted(curve)
    errors = [curve[k] for k in ks]
    figure = _new_figure(10, 4.2)
    left, right = figure.subplots(1, 2)
    left.plot(ks, errors, "o-", color="#37474f")
    if chosen in curve:
        left.plot([chosen], [curve[chosen]], "o", ms=11, mfc="none", mec="#c62828", mew=2, label=f"chosen K = {chosen}")
        left.legend()
    left.set_xlabel("K (clusters)")
    left.set_ylabel("relative NMF error ‖S − HHᵀ‖ / ‖S‖")
    left.set_title("NMF approximation error")
    first = curve[ks[0]]
    cuts = [(curve[a] - curve[b]) / first if first > 0 else 0.0 for a, b in zip(ks, ks[1:])]
    right.bar(ks[1:], cuts, color=["#37474f" if k <= chosen else "#90a4ae" for k in ks[1:]])
    right.axhline(tolerance, ls="--", color="black", lw=1, label=f"elbow tolerance {tolerance:g}")
    right.axvline(chosen + 0.5, color="#c62828", lw=1.5, label=f"K = {chosen}: every later cut below tolerance")
    right.set_xlabel("K")
    right.set_ylabel(f"error cut from K − 1 to K, as a fraction of e({ks[0]})")
    right.set_title("Elbow: smallest K after which every cut is small")
    right.set_ylim(0, max(max(cuts), tolerance) * 1.4)
    right.set_xlim(ks[0], ks[-1] + 0.6)
    right.legend(loc="upper left", fontsize=8)
    for ax, ticks in ((left, ks), (right, ks[1:])):
        ax.set_xticks(ticks if len(ticks) <= 16 else ticks[::2])
        ax.grid(alpha=0.3)
    dropped = int(clustering.get("empty_clusters", 0) or 0)
    if dropped:
        figure.suptitle(f"{dropped} NMF cluster(s) won no row: K = {report.k} in the end", fontsize=10)
    return figure


def concept_rejections(report) -> Figure:
    """Rows examined per cluster: accepted, rejected by the concept-consistency check, never reached."""
    order = _order(report)
    stats = {c.cluster: c for c in report.clusters}
    if report.details is not None:
        labels, status = report.details.labels, report.details.status
        counts = {s: [int(((labels == c) & (status == s)).sum()) for c in order] for s in STATUS_COLOURS}
    else:
        counts = {
            "selected": [stats[c].selected for c in order],
            "rejected_inconsistent": [stats[c].rejected for c in order],
            "not_reached": [stats[c].candidates - stats[c].selected - stats[c].rejected for c in order],
        }
    names = {"selected": "accepted", "rejected_inconsistent": "rejected (inconsistent concepts)",
             "not_reached": "not reached"}
    y = np.arange(len(order))
    figure = _new_figure(9.5, _per_cluster_height(len(order)))
    ax = figure.add_subplot()
    left = np.zeros(len(order))
    for status, colour in STATUS_COLOURS.items():
        ax.barh(y, counts[status], left=left, color=colour, label=names[status], edgecolor="white", linewidth=0.5)
        left += counts[status]
    for yi, total, accepted, rejected in zip(y, left, counts["selected"], counts["rejected_inconsistent"]):
        examined = accepted + rejected
        if examined:
            ax.text(total, yi, f"  {rejected / examined:.0%} of {examined} rejected", va="center", fontsize=8)
    ax.set_yticks(y, [f"cluster {c}" for c in order])
    ax.invert_yaxis()
    ax.set_xlim(0, max(left.max(), 1) * 1.3)
    ax.set_xlabel("candidate rows (examined in descending IES order)")
    graph = report.concept_graph
    if report.config.get("use_concept_graph", True):
        title = (f"Concept graph: {graph.get('nodes', 0)} concepts, {graph.get('edges', 0)} edges; "
                 f"{sum(counts['rejected_inconsistent'])} rows rejected")
    else:
        title = "Concept-consistency check switched off (ablation): nothing rejected"
    ax.set_title(title)
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return figure


@dataclass(frozen=True)
class FigureSpec:
    """One report figure: how to draw it, whether it needs the per-row details, and its title and caption (the
    report and the dataset card print both)."""

    draw: Callable[..., Figure]
    needs_details: bool
    title: str
    caption: str


#: Every report figure by file stem, in the order the report and the dataset card show them.
FIGURES: Dict[str, FigureSpec] = {
    "cluster_map": FigureSpec(
        cluster_map, True, "Instruction map",
        "Every instruction placed by the first two principal components of its diffusion coordinates (the space "
        "the clustering works in), coloured by cluster; selected rows are ringed in black. Numbers mark the "
        "cluster centres.",
    ),
    "cds_allocation": FigureSpec(
        cds_allocation, False, "Degradation and budget per cluster",
        "Left: capability degradation score (mean JSD between original and pruned model); cluster sizes in the "
        "labels. Right: the budget first allocated (in proportion to CDS, or to size x CDS), and what the selected "
        "rows finally took of it (after unfilled budget moved on), in the budget's unit. Clusters in selection "
        "order.",
    ),
    "jsd_distribution": FigureSpec(
        jsd_distribution, True, "JSD per cluster",
        "Distribution of the per-row JSD (bits) in each cluster; the diamond is the CDS (mean), dots are the "
        "selected rows (chosen by JSD / log cost, so not always the highest JSD).",
    ),
    "k_curve": FigureSpec(
        k_curve, False, "Choice of K",
        "Relative NMF error for each K tried, and the cut each added cluster brings (a fraction of the error at "
        "the smallest K); K is the smallest K after which every cut stays below the elbow tolerance.",
    ),
    "concept_rejections": FigureSpec(
        concept_rejections, False, "Concept-consistency rejections",
        "Rows examined per cluster: accepted, rejected because their concepts conflict with the concept graph "
        "built so far, and candidates never reached; the label gives the share rejected.",
    ),
}


def save_png(figure: Figure, path, dpi: int = 110) -> None:
    """Render with Agg and write a 256-colour palette PNG (no dithering): the same picture at about a third
    of the bytes, so a map of 20,000 translucent points stays small enough to commit and upload."""
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    image = Image.open(buffer).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, format="PNG",
                                                                                         optimize=True)


def save_figures(report, directory, dpi: int = 110) -> Dict[str, Path]:
    """Draw every figure the report can support into `directory` as `<name>.png`; returns name -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, spec in FIGURES.items():
        if spec.needs_details and report.details is None:
            continue
        path = directory / f"{name}.png"
        save_png(spec.draw(report), path, dpi=dpi)
        paths[name] = path
    return paths
