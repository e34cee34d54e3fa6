"""`PaserDatasetSelector`: PASER (arXiv 2502.12594) over a `datasets.Dataset`, its stages in the paper's order.

prepare -> embed (Sec. 3.2) -> JSD of each row (Eq. 4) -> concepts (Sec. 3.4) -> clusters (Sec. 3.2, Eqs. 2-3)
-> CDS and IES (Eqs. 4, 7) -> Algorithm 1 (App. B) -> report. Each stage is a function of what it needs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from datasets import Dataset
from datasets.fingerprint import Hasher

from .. import __version__
from ..caching import cached_map, combine, model_fingerprint, progress_bars
from ..formatting import resolve_chat_template
from ..reporting.report import ClusterStats, SelectionReport, token_summary
from . import schema
from .algorithm import AlgorithmResult, run_algorithm
from .clustering import ClusterResult, cluster_instructions
from .concepts import ConceptExtractor, merge_similar_concepts
from .config import PaserConfig
from .degradation import capability_degradation, individual_efficiency
from .divergence import JsdScorer
from .embedding import embed_rows, load_embedder
from .prepare import PreparedRows, prepare_dataset, resolve_format, truncation_warning
from .scoring import common_vocabulary, gather_scores, model_name, pad_token_id, scored_shards
from .teacher import attach_stored, check_no_stored_columns, stored_rows, topk_features
from .timing import Stopwatch

#: Above this share of examined rows rejected by the concept graph, the selector warns (the authors: 12-18%).
REJECTION_WARNING = 0.30


def score_jsd(prepared: Dataset, rows: np.ndarray, original, pruned, tokenizer, vocab: int, config: PaserConfig,
              state):
    """The JSD stage: (mean response-token JSD (Eq. 4) of each of `rows` (NaN for the others), this process's
    scored shards), scored longest first in cached shards keyed by their rows and the models
    (`scored_shards`). With ``teacher_topk`` the shards also hold the original model's top-k distributions, under
    a key that differs from the plain JSD key by k only."""
    fingerprint = combine(
        "jsd-v1",
        prepared._fingerprint,
        model_fingerprint(original),
        model_fingerprint(pruned),
        config.jsd_temperature,
        vocab,
    )
    features = None
    if config.teacher_topk:
        fingerprint = combine(fingerprint, "teacher-topk-v1", config.teacher_topk)
        features = topk_features(vocab, with_jsd=True)

    def make_scorer(progress):
        return JsdScorer(original, pruned, pad_token_id=pad_token_id(tokenizer), vocab=vocab,
                         temperature=config.jsd_temperature, tokens_per_batch=config.scoring_tokens_per_batch,
                         chunk_tokens=config.jsd_chunk_tokens, progress=progress, teacher_topk=config.teacher_topk)

    shards = scored_shards(
        prepared, rows, make_scorer, "jsd", fingerprint, config.cache_dir, config.scoring_shard_rows,
        "PASER: JSD scoring", config.show_progress and state.is_main_process, state, features=features,
    )
    return gather_scores(shards, (schema.JSD,), len(prepared), state)[schema.JSD], shards


def teacher_topk_about(original, tokenizer, config: PaserConfig, chat: bool) -> dict:
    """What the stored top-k columns are, for the report and the dataset card."""
    template = "the tokenizer's chat template" if chat else "the Alpaca template (paser_hf.formatting)"
    return {"model": model_name(original), "k": config.teacher_topk, "temperature": 1.0, "template": template,
            "max_length": config.max_length, "tokenizer": getattr(tokenizer, "name_or_path", "") or None}


def extract_concepts(prepared: Dataset, config: PaserConfig) -> List[List[str]]:
    """The concepts stage (Sec. 3.4): RAKE concepts of each row's concept text, cached under ``concepts``."""
    extractor = ConceptExtractor.from_config(config)
    out = cached_map(
        prepared.select_columns([schema.CONCEPT_TEXT]),
        lambda batch: {schema.CONCEPTS: extractor.batch(batch[schema.CONCEPT_TEXT])},
        "concepts",
        combine("concepts-v1", prepared._fingerprint, Hasher.hash(extractor)),
        config.cache_dir,
        batched=True,
        remove_columns=[schema.CONCEPT_TEXT],
        desc="PASER: extracting concepts",
    )
    return out[schema.CONCEPTS]


@dataclass
class AlgorithmInputs:
    """Per row the cluster, IES (NaN for non-candidates) and cost in budget units, per cluster the CDS; the
    allocation weights and the row priority Algorithm 1 uses."""

    labels: np.ndarray
    ies: np.ndarray
    cds: np.ndarray
    costs: np.ndarray
    weights: np.ndarray
    priority: np.ndarray


def allocation_weights(config: PaserConfig, cds: np.ndarray, labels: np.ndarray, costs: np.ndarray,
                       candidates: np.ndarray) -> np.ndarray:
    """Eq. 6's weights: CDS(c), or with ``allocation="size_cds"`` |c| x CDS(c), |c| the cluster's candidate
    rows (or tokens, under a token budget)."""
    if config.allocation == "cds":
        return cds
    size = np.bincount(labels[candidates], weights=costs[candidates], minlength=len(cds))
    return size * cds


def algorithm_inputs(config: PaserConfig, clustering: ClusterResult, jsd: np.ndarray, lengths: np.ndarray,
                     candidates: np.ndarray) -> AlgorithmInputs:
    """CDS and IES of the clustered rows, the allocation weights and the order of rows in a cluster.

    Under a row budget rows are ranked by IES = JSD / log(cost) (Eq. 7). Under a token budget a row's total
    divergence is JSD x length and its cost is its length, so the value per token is the mean JSD itself, and
    rows are ranked by it. The ablations of paper Table 4 (seeded by `config.seed`): without `use_clustering`
    rows get random labels among the same K clusters; without `use_degradation_allocation` every cluster weighs
    1 and its rows come in random order.
    """
    rng = np.random.default_rng(config.seed)
    k = int(clustering.k)
    if config.use_clustering:
        labels = np.asarray(clustering.labels, dtype=np.int64)
    else:
        labels = rng.integers(0, k, size=len(jsd))
    costs = config.row_costs(lengths)
    ies = individual_efficiency(np.nan_to_num(jsd, nan=0.0), lengths)
    ies[~candidates] = np.nan
    cds = capability_degradation(jsd, labels, k, candidates)
    if config.use_degradation_allocation:
        value = ies if config.budget_unit == "rows" else np.where(candidates, jsd, np.nan)
        weights = allocation_weights(config, cds, labels, costs, candidates)
        return AlgorithmInputs(labels, ies, cds, costs, weights, priority=np.nan_to_num(value, nan=-np.inf))
    priority = np.zeros(len(jsd))
    for c in range(k):
        order = rng.permutation(np.flatnonzero((labels == c) & candidates))
        priority[order] = -np.arange(len(order))
    return AlgorithmInputs(labels, ies, cds, costs, weights=np.ones(k), priority=priority)


def row_status(result: AlgorithmResult, rows: PreparedRows) -> np.ndarray:
    """The algorithm's statuses, with the rows that could not be scored marked as skipped."""
    status = result.status.copy()
    status[rows.empty] = schema.SKIPPED_EMPTY
    status[rows.cut_away] = schema.SKIPPED_TRUNCATED
    return status


def rejection_rate(status: np.ndarray) -> Optional[float]:
    """Rows the concept graph rejected over rows it examined (accepted or rejected); None when it examined none."""
    rejected = int((status == schema.REJECTED).sum())
    examined = rejected + int((status == schema.SELECTED).sum())
    return rejected / examined if examined else None


def selection_warnings(result: AlgorithmResult, rows: PreparedRows, status: np.ndarray, budget: int,
                       config: PaserConfig, concept_rejection_rate: Optional[float]) -> List[str]:
    """Why the selection may not be what was asked for: the allocation fallback, less than the budget, a concept
    graph that rejects more than `REJECTION_WARNING` of the rows it examines, truncated rows."""
    messages = [result.fallback] if result.fallback else []
    filled = int(result.filled.sum())
    if filled < budget:
        candidates = int((~rows.empty & ~rows.cut_away).sum())
        messages.append(
            f"Selected {filled} {config.budget_unit}, fewer than the budget of {budget}: only {candidates} rows could "
            f"be scored ({int(rows.empty.sum())} with an empty response, {int(rows.cut_away.sum())} whose response "
            f"was cut away by max_length={config.max_length}) and {int((status == schema.REJECTED).sum())} were "
            "rejected by the concept-consistency check."
        )
    if concept_rejection_rate is not None and concept_rejection_rate > REJECTION_WARNING:
        messages.append(
            f"The concept-consistency check rejected {concept_rejection_rate:.0%} of the rows it examined (the "
            f"PASER authors report 12-18%): the concepts may be too generic for this data. Raise "
            "min_concept_words, or set concept_similarity=None / use_concept_graph=False."
        )
    truncated = truncation_warning(int(rows.truncated.sum()), config.max_length)
    return messages + ([truncated] if truncated else [])


def scores_table(inputs: AlgorithmInputs, jsd: np.ndarray, concepts: Optional[list], status: np.ndarray) -> Dataset:
    """`selector.scores_`: one row per input row."""
    n = len(jsd)
    return Dataset.from_dict({
        "index": np.arange(n),
        schema.CLUSTER: inputs.labels,
        schema.JSD: jsd,
        schema.IES: inputs.ies,
        schema.CONCEPTS: [list(c) for c in concepts] if concepts is not None else [[] for _ in range(n)],
        schema.STATUS: status.tolist(),
    })


def cluster_stats(inputs: AlgorithmInputs, result: AlgorithmResult, candidates: np.ndarray,
                  lengths: np.ndarray) -> List[ClusterStats]:
    stats = []
    chosen = result.status == schema.SELECTED
    for c in range(len(inputs.cds)):
        members = (inputs.labels == c) & candidates
        stats.append(ClusterStats(
            cluster=c,
            size=int((inputs.labels == c).sum()),
            candidates=int(members.sum()),
            cds=float(inputs.cds[c]),
            allocated=int(result.first_allocation[c]),
            selected=int(result.accepted[c]),
            rejected=int(result.rejected[c]),
            mean_ies=float(inputs.ies[members].mean()) if members.any() else 0.0,
            filled=int(result.filled[c]),
            selected_tokens=int(lengths[(inputs.labels == c) & chosen].sum()),
        ))
    return stats


def selection_report(dataset: Dataset, budget: int, clustering: ClusterResult, inputs: AlgorithmInputs,
                     result: AlgorithmResult, rows: PreparedRows, status: np.ndarray, config: PaserConfig,
                     dataset_format: str, models: dict, timings: dict) -> SelectionReport:
    """`selector.report_`, with its warnings (`selection_warnings`)."""
    candidates = ~rows.empty & ~rows.cut_away
    rate = rejection_rate(status) if config.use_concept_graph else None
    return SelectionReport(
        method="paser",
        num_rows=len(dataset),
        budget=budget,
        budget_unit=config.budget_unit,
        allocation=config.allocation,
        num_selected=len(result.selected),
        tokens=token_summary(rows.lengths, result.selected),
        k=int(clustering.k),
        k_curve={int(key): float(v) for key, v in clustering.k_curve.items()},
        clusters=cluster_stats(inputs, result, candidates, rows.lengths),
        clustering=clustering.to_dict(),
        concept_graph={"nodes": result.concept_graph.num_nodes, "edges": result.concept_graph.num_edges},
        concept_rejection_rate=None if rate is None else round(rate, 4),
        num_truncated=int(rows.truncated.sum()),
        scored_tokens=int(rows.lengths[candidates].sum()),
        num_skipped_empty_response=int(rows.empty.sum() + rows.cut_away.sum()),
        allocation_fallback=result.fallback,
        timings=timings,
        config=config.to_dict(),
        dataset_format=dataset_format,
        models=models,
        warnings=selection_warnings(result, rows, status, budget, config, rate),
    )


class PaserDatasetSelector:
    """Select the rows of an instruction dataset that best recover a pruned model (PASER, arXiv 2502.12594).

    Configuration goes to the constructor; the work happens in `__call__` (or `select`). After a call:
    ``report_`` (a `SelectionReport`), ``scores_`` (a `Dataset`, one row per input row: ``index``,
    ``paser_cluster``, ``paser_jsd``, ``paser_ies``, ``paser_concepts``, ``paser_status``),
    ``selected_indices_``, ``clustering_`` (the `ClusterResult`, with diffusion coordinates) and
    ``concept_graph_``.

    `formatting_func`, if given, maps a row to ``{"prompt": ..., "completion": ...}`` (strings or message lists)
    and replaces format detection for the divergence; embeddings and concepts then use the prompt text.
    """

    def __init__(
        self,
        original_model=None,
        pruned_model=None,
        tokenizer=None,
        config: Optional[PaserConfig] = None,
        embedder=None,
        formatting_func: Optional[Callable[[dict], dict]] = None,
    ):
        self.original_model = original_model
        self.pruned_model = pruned_model
        self.tokenizer = tokenizer
        self.config = config if config is not None else PaserConfig()
        self.embedder = embedder
        self.formatting_func = formatting_func

    def __call__(self, dataset: Dataset) -> Dataset:
        return self.select(dataset)

    def select(self, dataset: Dataset) -> Dataset:
        """Run PASER on `dataset`; returns the selected rows with every original column, in their original order.

        Under `accelerate launch` every process embeds and scores its share of the rows; the main process
        gathers them, clusters and selects, and every process returns the same subset.
        """
        given = dataset
        dataset = schema.materialize(dataset, self.config.cache_dir, self.config.show_progress)
        schema.check_dataset(dataset)
        if self.original_model is None or self.pruned_model is None or self.tokenizer is None:
            raise ValueError("PaserDatasetSelector needs original_model, pruned_model and tokenizer.")
        schema.check_reserved_columns(dataset)
        if self.config.teacher_topk:
            check_no_stored_columns(dataset)
        cfg, original, pruned, tokenizer = self.config, self.original_model, self.pruned_model, self.tokenizer
        state = PartialState(cpu=not torch.cuda.is_available())
        dataset_format = resolve_format(dataset, cfg, self.formatting_func)
        chat = resolve_chat_template(tokenizer, cfg.use_chat_template)
        vocab = common_vocabulary(original, pruned, tokenizer)
        stopwatch = Stopwatch()
        show_progress = cfg.show_progress and state.is_main_process

        with progress_bars(show_progress):
            with stopwatch("prepare"), state.main_process_first():
                prepared = prepare_dataset(dataset, tokenizer, cfg, dataset_format, chat, self.formatting_func)
            rows = PreparedRows.of(prepared)
            budget = cfg.budget_for(rows.lengths)
            candidates = ~rows.empty & ~rows.cut_away
            with stopwatch("embedding"):
                embedder = self.embedder if self.embedder is not None else load_embedder(cfg.embedding_model)
                embeddings = embed_rows(prepared, embedder, cfg, state)
            with stopwatch("divergence"):
                jsd, shards = score_jsd(prepared, np.flatnonzero(candidates), original, pruned, tokenizer, vocab, cfg,
                                        state)

            outcome = None
            if state.is_main_process:
                with stopwatch("concepts"):
                    concepts = extract_concepts(prepared, cfg) if cfg.use_concept_graph else None
                    if concepts is not None and cfg.concept_similarity is not None:
                        concepts = merge_similar_concepts(concepts, embedder, cfg.concept_similarity,
                                                          cfg.embedding_batch_size)
                with stopwatch("clustering"):
                    clustering = cluster_instructions(embeddings, config=cfg)
                with stopwatch("selection"):
                    inputs = algorithm_inputs(cfg, clustering, jsd, rows.lengths, candidates)
                    result = run_algorithm(inputs.labels, inputs.weights, inputs.priority, candidates, budget,
                                           concepts, inputs.costs)
                    status = row_status(result, rows)
                report = selection_report(
                    dataset, budget, clustering, inputs, result, rows, status, cfg, dataset_format,
                    models={"original": model_name(original), "pruned": model_name(pruned), "vocabulary": vocab,
                            "paser_hf_version": __version__, "dataset_fingerprint": dataset._fingerprint,
                            **({"teacher_topk": teacher_topk_about(original, tokenizer, cfg, chat)}
                               if cfg.teacher_topk else {})},
                    timings=stopwatch.timings(),
                )
                outcome = (report, scores_table(inputs, jsd, concepts, status), result.selected, clustering,
                           result.concept_graph)
        if state.num_processes > 1:
            outcome = broadcast_object_list([outcome])[0]
        report, scores, selected, clustering, graph = outcome

        self.report_ = report
        self.scores_ = scores
        self.selected_indices_ = selected
        self.clustering_ = clustering
        self.concept_graph_ = graph
        self.report_.attach(self.scores_, self.clustering_.coordinates, prepared[schema.TEXT])
        if dataset is not given:
            self.report_.warnings.append(schema.STREAMED_NOTE)
        for message in self.report_.warnings:
            warnings.warn(message, stacklevel=2)
        with progress_bars(show_progress):
            subset = dataset.select(selected)
            if cfg.keep_scores:
                for column in schema.SCORE_COLUMNS:
                    subset = subset.add_column(column, np.asarray(scores[column])[selected].tolist())
            if cfg.teacher_topk:
                subset = attach_stored(subset, stored_rows(shards, selected, state))
        return subset
