"""Selection reports (`selector.report_`): `SelectionReport`, what a PASER selection did per stage and per cluster,
and its on-disk form (`report.json`, figures, `report.md`); `BaselineReport` for the baselines; `Report`, their
shared fields."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass(kw_only=True)
class Report:
    """The fields every selection report has (`selector.report_`); everything `to_dict()` returns is
    JSON-serialisable, its keys in `key_order`.

    `budget` is B in `budget_unit` ("rows" or "tokens"); `tokens` (`token_summary`) sets the subset's training
    tokens per row beside the pool's, so the cost of what was selected is visible whatever the unit.
    """

    method: str = "paser"
    num_rows: int
    budget: int
    budget_unit: str = "rows"
    num_selected: int
    tokens: Dict[str, float] = field(default_factory=dict)
    timings: Dict[str, float]
    config: Dict[str, Any]
    models: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    #: The keys of `to_dict()` in the order the JSON files have always had them.
    key_order: ClassVar[Tuple[str, ...]] = ()

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        return {name: data[name] for name in self.key_order or data}

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(kw_only=True)
class BaselineReport(Report):
    """What a baseline selection did. `details` holds the method's own counts (for IFD: rows at or above
    `max_ifd` used, rows skipped, tokens)."""

    details: Dict[str, Any] = field(default_factory=dict)

    key_order: ClassVar[Tuple[str, ...]] = (
        "method", "num_rows", "budget", "budget_unit", "num_selected", "tokens", "timings", "config", "models",
        "details", "warnings",
    )

    def save(self, directory) -> Path:
        """Write `report.json` into `directory` (created if needed); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "report.json"
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path


def token_summary(lengths, selected) -> Dict[str, float]:
    """Training tokens of the pool and of the `selected` rows, in all and per row (`lengths`: every row's)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    chosen = lengths[np.asarray(selected, dtype=np.int64)]
    return {
        "pool": int(lengths.sum()),
        "pool_per_row": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
        "selected": int(chosen.sum()),
        "selected_per_row": round(float(chosen.mean()), 2) if len(chosen) else 0.0,
    }


@dataclass
class ClusterStats:
    """One cluster: its size, capability degradation score, budget and outcome. `allocated` (its first share of
    the budget) and `filled` (what its selected rows take of it) are in the report's budget unit."""

    cluster: int
    size: int
    candidates: int
    cds: float
    allocated: int
    selected: int
    rejected: int
    mean_ies: float
    filled: Optional[int] = None
    selected_tokens: Optional[int] = None

    def __post_init__(self):
        if self.filled is None:  # a report written before token budgets: the unit was rows
            self.filled = self.selected


@dataclass(kw_only=True)
class SelectionReport(Report):
    """What a PASER selection did, per stage and per cluster."""

    k: int
    k_curve: Dict[int, float]
    clusters: List[ClusterStats]
    clustering: Dict[str, Any]
    concept_graph: Dict[str, int]
    num_truncated: int
    scored_tokens: int
    num_skipped_empty_response: int
    allocation_fallback: Optional[str]
    dataset_format: str
    allocation: str = "cds"
    concept_rejection_rate: Optional[float] = None

    key_order: ClassVar[Tuple[str, ...]] = (
        "method", "num_rows", "budget", "budget_unit", "allocation", "num_selected", "tokens", "k", "k_curve",
        "clusters", "clustering", "concept_graph", "concept_rejection_rate", "num_truncated", "scored_tokens",
        "num_skipped_empty_response", "allocation_fallback", "timings", "config", "dataset_format", "models",
        "warnings",
    )

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SelectionReport":
        """Rebuild a report from `to_dict()` output (e.g. a saved `report.json`); it has no per-row details."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["k_curve"] = {int(k): float(v) for k, v in data["k_curve"].items()}
        values["clusters"] = [ClusterStats(**c) for c in data["clusters"]]
        return cls(**values)

    @classmethod
    def load(cls, path) -> "SelectionReport":
        """Read a `report.json` file, or the one inside a report folder."""
        path = Path(path)
        if path.is_dir():
            path = path / "report.json"
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def attach(self, scores, coordinates, texts: Sequence[str]) -> None:
        """Keep the per-row data behind the figures and `report.md` (the selector calls this).

        Not a dataclass field: `to_dict()`, equality and the JSON never see it.
        """
        self._details = SelectionDetails(scores, np.asarray(coordinates), texts)

    @property
    def details(self) -> Optional["SelectionDetails"]:
        """The attached `SelectionDetails`, or None (e.g. a report read back from JSON)."""
        return getattr(self, "_details", None)

    def save(self, directory, dpi: int = 110) -> Dict[str, Path]:
        """Write `report.json`, the PNG figures and `report.md` into `directory`; returns name -> path.

        The cluster map and the JSD distributions need the per-row details (`attach`); without them only
        the figures the JSON can draw are written, and `report.md` says so.
        """
        from .figures import save_figures

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"report.json": directory / "report.json"}
        paths["report.json"].write_text(self.to_json() + "\n", encoding="utf-8")
        figures = save_figures(self, directory, dpi=dpi)
        paths.update(figures)
        paths["report.md"] = directory / "report.md"
        paths["report.md"].write_text(self.to_markdown({name: p.name for name, p in figures.items()}), encoding="utf-8")
        return paths

    def to_markdown(self, figures: Optional[Dict[str, str]] = None, examples: int = 5, concepts: int = 8) -> str:
        """`report.md`: the summary, the figures (name -> file, relative to the markdown) and, per cluster in
        selection order, its most typical instructions and most distinctive concepts."""
        from .figures import FIGURES

        figures = figures or {}
        lines = [
            "# PASER selection report",
            "",
            f"{self.num_selected} of {self.num_rows} rows selected (budget B = {self.budget} {self.budget_unit}, "
            f"allocation `{self.allocation}`) from {self.k} clusters of instructions; original model "
            f"`{self.models.get('original')}`, pruned model `{self.models.get('pruned')}`, paser-hf "
            f"{self.models.get('paser_hf_version')}, seed {self.config.get('seed')}. Method: PASER "
            "(arXiv:2502.12594).",
            "",
        ]
        if self.tokens:
            lines += [
                f"Training tokens: {self.tokens['selected']:,} selected ({self.tokens['selected_per_row']:.1f} per "
                f"row) of the pool's {self.tokens['pool']:,} ({self.tokens['pool_per_row']:.1f} per row).",
                "",
            ]
        if self.concept_rejection_rate is not None:
            lines += [
                f"Concept graph: {self.concept_rejection_rate:.1%} of the rows it examined were rejected (the "
                "authors report 12-18%).",
                "",
            ]
        if self.allocation_fallback:
            lines += [f"Allocation fallback: {self.allocation_fallback}.", ""]
        lines += ["## Clusters", "", self.cluster_table(), ""]
        lines += ["## Figures", ""]
        for name, spec in FIGURES.items():
            if name in figures:
                lines += [f"### {spec.title}", "", f"![{spec.title}]({figures[name]})", "", spec.caption, ""]
        missing = [spec.title for name, spec in FIGURES.items() if name not in figures]
        if missing:
            lines += [f"Not drawn (no per-row details attached to this report): {', '.join(missing)}.", ""]
        details = self.details
        lines += ["## What each cluster stands for", ""]
        if details is None:
            lines += ["Per-row details are not attached to this report, so no examples can be shown.", ""]
        for c in sorted(self.clusters, key=lambda c: (-c.cds, c.cluster)):
            lines += [
                f"### Cluster {c.cluster}",
                "",
                f"{c.size} rows, CDS {c.cds:.4f}, {c.allocated} allocated, {c.selected} selected, {c.rejected} "
                "rejected by the concept graph.",
                "",
            ]
            if details is None:
                continue
            top = details.top_concepts(c.cluster, concepts)
            lines += ["Top concepts: " + (", ".join(f"*{_md(t)}* ({n})" for t, n in top) or "none") + ".", ""]
            lines += ["Most typical instructions (nearest the cluster centre in diffusion coordinates):", ""]
            rows = details.typical(c.cluster, examples)
            lines += [f"{i}. {_md(details.texts[r], 200)}" for i, r in enumerate(rows, 1)]
            lines.append("")
        if self.warnings:
            lines += ["## Warnings", "", *[f"- {w}" for w in self.warnings], ""]
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        data = super().to_dict()
        data["k_curve"] = {str(k): float(v) for k, v in self.k_curve.items()}
        return data

    def cluster_table(self) -> str:
        """The per-cluster figures as a markdown table."""
        # what a cluster filled of the budget is its selected rows, or under a token budget its selected tokens
        lines = [
            f"| cluster | size | CDS | allocated {self.budget_unit} | selected rows | selected tokens | rejected |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in sorted(self.clusters, key=lambda c: -c.cds):
            tokens = "-" if c.selected_tokens is None else c.selected_tokens
            lines.append(f"| {c.cluster} | {c.size} | {c.cds:.4f} | {c.allocated} | {c.selected} | {tokens} | "
                         f"{c.rejected} |")
        return "\n".join(lines)


def _md(text, limit: Optional[int] = None) -> str:
    """One markdown-safe line of `text`, cut to `limit` characters."""
    line = re.sub(r"\s+", " ", str(text)).strip()
    if limit is not None and len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", line)


@dataclass
class SelectionDetails:
    """The per-row data of a selection, for figures and `report.md`; never serialised.

    `scores` is `selector.scores_` (cluster, JSD, IES, concepts, status per row), `coordinates` the (N, d)
    diffusion coordinates the clustering used, `texts` the embedded text of each row.
    """

    scores: Any
    coordinates: np.ndarray
    texts: Sequence[str]

    @cached_property
    def labels(self) -> np.ndarray:
        return np.asarray(self.scores["paser_cluster"], dtype=np.int64)

    @cached_property
    def jsd(self) -> np.ndarray:
        return np.asarray(self.scores["paser_jsd"], dtype=np.float64)

    @cached_property
    def status(self) -> np.ndarray:
        return np.asarray(self.scores["paser_status"], dtype=object)

    def typical(self, cluster: int, n: int) -> List[int]:
        """Rows of `cluster` nearest its mean in diffusion coordinates, distinct texts, nearest first."""
        members = np.flatnonzero(self.labels == cluster)
        if members.size == 0:
            return []
        points = self.coordinates[members]
        distance = np.linalg.norm(points - points.mean(axis=0), axis=1)
        rows, seen = [], set()
        for r in members[np.lexsort((members, distance))]:
            text = re.sub(r"\s+", " ", str(self.texts[int(r)])).strip().lower()
            if text not in seen:
                seen.add(text)
                rows.append(int(r))
                if len(rows) == n:
                    break
        return rows

    @cached_property
    def concept_counts(self) -> tuple:
        """(rows having each concept, the same per cluster): one pass over the concepts column."""
        overall, per_cluster = Counter(), {}
        for label, concepts in zip(self.labels.tolist(), self.scores["paser_concepts"]):
            unique = set(concepts)
            overall.update(unique)
            per_cluster.setdefault(label, Counter()).update(unique)
        return overall, per_cluster

    def top_concepts(self, cluster: int, n: int) -> List[tuple]:
        """The `n` concepts most characteristic of `cluster`, with their row counts: rows of the cluster that
        have the concept times log(N / rows that have it anywhere), so concepts common everywhere rank low.
        Concepts of a single row are left out."""
        overall, per_cluster = self.concept_counts
        total = len(self.labels)
        scored = sorted(
            ((count * np.log(total / overall[c]), c, count) for c, count in per_cluster.get(cluster, {}).items()
             if count > 1),
            key=lambda item: (-item[0], item[1]),
        )
        return [(c, count) for _, c, count in scored[:n]]
