"""`PaserDatasetSelector`: the PASER selection loop (paper Algorithm 1, spec section 4) over a `datasets.Dataset`."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from typing import Callable, Optional

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from datasets import Dataset, DatasetDict
from datasets.fingerprint import Hasher
from datasets.utils import logging as ds_logging
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..caching import combine, model_fingerprint
from ..formatting import (
    detect_format,
    instruction_text,
    make_row_formatter,
    resolve_chat_template,
    response_text,
    text_of,
    tokenize_prompt_completion,
)
from ..reporting.report import ClusterStats, SelectionReport
from .allocation import allocate
from .clustering import cluster_instructions
from .concepts import ConceptExtractor, ConceptGraph
from .config import PaserConfig
from .divergence import JsdScorer, common_vocabulary
from .embedding import embed, load_embedder

SELECTED = "selected"
REJECTED = "rejected_inconsistent"
NOT_REACHED = "not_reached"
SKIPPED_EMPTY = "skipped_empty_response"
SKIPPED_TRUNCATED = "skipped_truncated_response"
SCORE_COLUMNS = ("paser_cluster", "paser_jsd", "paser_ies")


@contextlib.contextmanager
def _datasets_bars(enabled: bool):
    was_enabled = ds_logging.is_progress_bar_enabled()
    (ds_logging.enable_progress_bar if enabled else ds_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (ds_logging.enable_progress_bar if was_enabled else ds_logging.disable_progress_bar)()


def check_dataset(dataset) -> None:
    """Raise, naming the fix, unless `dataset` is one non-empty `datasets.Dataset` split."""
    if isinstance(dataset, DatasetDict):
        raise TypeError(
            f"Got a DatasetDict with splits {list(dataset)}; pass one split, e.g. selector(dataset['train'])."
        )
    if not isinstance(dataset, Dataset):
        raise TypeError(f"Expected a datasets.Dataset, got {type(dataset).__name__}; use Dataset.from_list(...).")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: there is nothing to select from.")


def individual_efficiency(jsd: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """IES = JSD / log(cost), cost = (|x| + |y|)^2 in tokens (paper Eq. 7); lengths below 2 count as 2 so log > 0."""
    return jsd / np.log(np.maximum(lengths, 2).astype(np.float64) ** 2)


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

    # ------------------------------------------------------------------ stages
    def _check_inputs(self, dataset) -> None:
        check_dataset(dataset)
        if self.original_model is None or self.pruned_model is None or self.tokenizer is None:
            raise ValueError("PaserDatasetSelector needs original_model, pruned_model and tokenizer.")
        for reserved in ("paser_index", *SCORE_COLUMNS):
            if reserved in dataset.column_names:
                raise ValueError(
                    f"The dataset already has a column {reserved!r}, which the selector writes; remove or rename it "
                    "(e.g. dataset.remove_columns([...]))."
                )

    def _cache_file(self, name: str, fingerprint: str) -> Optional[str]:
        if self.config.cache_dir is None:
            return None
        os.makedirs(self.config.cache_dir, exist_ok=True)
        return os.path.join(self.config.cache_dir, f"paser-{name}-{fingerprint}.arrow")

    def _prepare(self, dataset: Dataset, dataset_format: str, chat: bool) -> Dataset:
        """Index, texts for embedding and concepts, and the tokenised training sequence of every row."""
        cfg, tokenizer = self.config, self.tokenizer
        formatter = make_row_formatter(dataset_format, chat, self.formatting_func)
        use_output = cfg.concept_source == "instruction_output"
        embed_output = cfg.embed_response
        custom = self.formatting_func is not None

        def prepare(batch, indices):
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            out = {k: [] for k in ("paser_index", "paser_text", "paser_concept_text", "input_ids", "response_start",
                                   "paser_length", "paser_response_tokens", "paser_truncated", "paser_empty")}
            for index, row in zip(indices, rows):
                pc = formatter(row)
                if custom:
                    instr, resp = text_of(pc["prompt"]), text_of(pc["completion"])
                else:
                    instr, resp = instruction_text(row, dataset_format), response_text(row, dataset_format)
                tokens = tokenize_prompt_completion(pc["prompt"], pc["completion"], tokenizer, cfg.max_length)
                out["paser_index"].append(index)
                out["paser_text"].append(f"{instr}\n{resp}" if embed_output else instr)
                out["paser_concept_text"].append(f"{instr}\n{resp}" if use_output else instr)
                out["input_ids"].append(tokens["input_ids"])
                out["response_start"].append(tokens["response_start"])
                out["paser_length"].append(len(tokens["input_ids"]))
                out["paser_response_tokens"].append(tokens["num_response_tokens"])
                out["paser_truncated"].append(tokens["truncated"])
                out["paser_empty"].append(not resp.strip())
            return out

        fingerprint = combine(
            "prepare-v1",
            dataset._fingerprint,
            Hasher.hash(tokenizer),
            Hasher.hash(self.formatting_func) if custom else None,
            dataset_format,
            chat,
            cfg.max_length,
            cfg.concept_source,
            cfg.embed_response,
        )
        return dataset.map(
            prepare,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            new_fingerprint=fingerprint,
            cache_file_name=self._cache_file("prepare", fingerprint),
            desc="PASER: formatting and tokenising",
        )

    def _embeddings(self, prepared: Dataset, state: PartialState) -> np.ndarray:
        """(N, D) unit-norm embeddings; each process embeds a contiguous part, gathered in row order."""
        cfg = self.config
        embedder = self.embedder if self.embedder is not None else load_embedder(cfg.embedding_model)
        embedder_key = model_fingerprint(embedder) if isinstance(embedder, nn.Module) else Hasher.hash(embedder)
        texts = prepared.select_columns(["paser_text"])
        if state.num_processes > 1:
            texts = texts.shard(state.num_processes, state.process_index, contiguous=True)
        fingerprint = combine(
            "embed-v1", prepared._fingerprint, embedder_key, cfg.embed_response, state.num_processes,
            state.process_index,
        )
        vectors = embed(
            texts,
            embedder,
            cfg.embedding_batch_size,
            fingerprint,
            self._cache_file("embed", fingerprint),
            cfg.show_progress and state.is_main_process,
        )
        if state.num_processes > 1:
            vectors = np.concatenate(gather_object([vectors]), axis=0)
        return vectors

    def _divergence(self, prepared, candidates, lengths, vocab, state: PartialState) -> np.ndarray:
        """Mean response JSD of each candidate row (NaN elsewhere), scored longest first in cached shards.

        A shard's cache key depends on its rows and the models only, so a killed run resumes at the first
        unfinished shard, whatever the number of processes; process p scores shards p, p + P, p + 2P, ...
        """
        cfg = self.config
        jsd = np.full(len(prepared), np.nan)
        if len(candidates) == 0:
            return jsd
        tokenizer = self.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            pad_id = 0
        base = combine(
            "jsd-v1",
            prepared._fingerprint,
            model_fingerprint(self.original_model),
            model_fingerprint(self.pruned_model),
            cfg.jsd_temperature,
            vocab,
        )
        order = candidates[np.argsort(-lengths[candidates], kind="stable")]
        columns = prepared.select_columns(["paser_index", "input_ids", "response_start"])
        shard_rows = cfg.scoring_shard_rows
        shards = [order[start : start + shard_rows] for start in range(0, len(order), shard_rows)]
        mine = shards[state.process_index :: state.num_processes]
        bar = tqdm(
            total=int(sum(lengths[rows].sum() for rows in mine)), unit="tok", unit_scale=True,
            desc="PASER: JSD scoring", disable=not (cfg.show_progress and state.is_main_process),
        )
        scorer = JsdScorer(
            self.original_model,
            self.pruned_model,
            pad_token_id=pad_id,
            vocab=vocab,
            temperature=cfg.jsd_temperature,
            tokens_per_batch=cfg.scoring_tokens_per_batch,
            chunk_tokens=cfg.jsd_chunk_tokens,
            progress=bar.update,
        )
        done = []
        with _datasets_bars(False):
            for rows in mine:
                before = bar.n
                fingerprint = combine(base, Hasher.hash(rows.tobytes()))
                scored = columns.select(rows).map(
                    scorer,
                    batched=True,
                    batch_size=256,
                    remove_columns=["input_ids", "response_start"],
                    new_fingerprint=fingerprint,
                    cache_file_name=self._cache_file("jsd", fingerprint),
                )
                done.append((np.asarray(scored["paser_index"]), np.asarray(scored["paser_jsd"], dtype=np.float64)))
                bar.update(int(lengths[rows].sum()) - (bar.n - before))  # a shard read from the cache
        bar.close()
        if state.num_processes > 1:
            done = gather_object(done)
        for index, values in done:
            jsd[index] = values
        return jsd

    def _concepts(self, prepared: Dataset) -> list:
        extractor = ConceptExtractor.from_config(self.config)
        fingerprint = combine("concepts-v1", prepared._fingerprint, Hasher.hash(extractor))
        out = prepared.select_columns(["paser_concept_text"]).map(
            lambda batch: {"paser_concepts": extractor.batch(batch["paser_concept_text"])},
            batched=True,
            remove_columns=["paser_concept_text"],
            new_fingerprint=fingerprint,
            cache_file_name=self._cache_file("concepts", fingerprint),
            desc="PASER: extracting concepts",
        )
        return out["paser_concepts"]

    # ------------------------------------------------------------------ the loop
    def _select_loop(self, labels, k, cds, ies, candidate_mask, concepts, budget, rng):
        """Algorithm 1: clusters in descending CDS, rows in descending IES, concept-consistency check, and
        unfilled budget handed on to clusters that still have candidates until B rows are accepted."""
        cfg = self.config
        status = np.full(len(labels), NOT_REACHED, dtype=object)
        queues = []
        for c in range(k):
            members = np.flatnonzero((labels == c) & candidate_mask)
            if cfg.use_degradation_allocation:
                members = members[np.lexsort((members, -ies[members]))]
            else:
                members = rng.permutation(members)
            queues.append(members)
        sizes = np.array([len(q) for q in queues], dtype=np.int64)
        weights = cds if cfg.use_degradation_allocation else np.ones(k)
        fallback = None
        if cfg.use_degradation_allocation and sizes.sum() > 0 and not (weights[sizes > 0] > 0).any():
            fallback = "every cluster has CDS 0 (identical models?): budget split in proportion to cluster sizes"
            weights = sizes.astype(np.float64)
        cluster_order = np.lexsort((np.arange(k), -weights))
        graph = ConceptGraph()
        pointer = np.zeros(k, dtype=np.int64)
        accepted = np.zeros(k, dtype=np.int64)
        rejected = np.zeros(k, dtype=np.int64)
        first_allocation = None
        target = np.zeros(k, dtype=np.int64)
        while True:
            room = sizes - pointer
            missing = budget - int(accepted.sum())
            if missing <= 0 or room.sum() == 0:
                break
            target = target + allocate(missing, weights, room)
            if first_allocation is None:
                first_allocation = target.copy()
            for c in cluster_order:
                queue = queues[c]
                while accepted[c] < target[c] and pointer[c] < len(queue):
                    i = queue[pointer[c]]
                    pointer[c] += 1
                    if not cfg.use_concept_graph or graph.try_add(concepts[i]):
                        status[i] = SELECTED
                        accepted[c] += 1
                    else:
                        status[i] = REJECTED
                        rejected[c] += 1
                target[c] = accepted[c]
        if first_allocation is None:
            first_allocation = np.zeros(k, dtype=np.int64)
        return status, first_allocation, accepted, rejected, graph, fallback

    # ------------------------------------------------------------------ public
    def select(self, dataset: Dataset) -> Dataset:
        """Run PASER on `dataset`; returns the selected rows with every original column, in their original order.

        Under `accelerate launch` every process embeds and scores its share of the rows; the main process
        gathers them, clusters and selects, and every process returns the same subset.
        """
        self._check_inputs(dataset)
        cfg = self.config
        state = PartialState(cpu=not torch.cuda.is_available())
        budget = cfg.budget_rows(len(dataset))
        dataset_format = "custom" if self.formatting_func is not None else detect_format(
            dataset.column_names, cfg.dataset_format
        )
        chat = resolve_chat_template(self.tokenizer, cfg.use_chat_template)
        vocab = common_vocabulary(self.original_model, self.pruned_model, self.tokenizer)

        timings = {}
        with _datasets_bars(cfg.show_progress and state.is_main_process):
            t0 = time.perf_counter()
            with state.main_process_first():
                prepared = self._prepare(dataset, dataset_format, chat)
            timings["prepare"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            embeddings = self._embeddings(prepared, state)
            timings["embedding"] = time.perf_counter() - t0

            lengths = np.asarray(prepared["paser_length"], dtype=np.int64)
            response_tokens = np.asarray(prepared["paser_response_tokens"], dtype=np.int64)
            truncated = np.asarray(prepared["paser_truncated"], dtype=bool)
            empty = np.asarray(prepared["paser_empty"], dtype=bool) | (response_tokens == 0) & ~truncated
            cut_away = ~empty & (response_tokens == 0)

            t0 = time.perf_counter()
            jsd = self._divergence(prepared, np.flatnonzero(~empty & ~cut_away), lengths, vocab, state)
            timings["divergence"] = time.perf_counter() - t0

            outcome = None
            if state.is_main_process:
                t0 = time.perf_counter()
                concepts = self._concepts(prepared) if cfg.use_concept_graph else [[] for _ in range(len(dataset))]
                timings["concepts"] = time.perf_counter() - t0
                outcome = self._decide(
                    dataset, embeddings, jsd, lengths, truncated, empty, cut_away, concepts, budget, vocab,
                    dataset_format, timings,
                )
        if state.num_processes > 1:
            outcome = broadcast_object_list([outcome])[0]
        for name, value in outcome.items():
            setattr(self, name, value)
        self.report_.attach(self.scores_, self.clustering_.coordinates, prepared["paser_text"])
        for message in self.report_.warnings:
            warnings.warn(message, stacklevel=2)

        chosen = self.selected_indices_
        with _datasets_bars(cfg.show_progress and state.is_main_process):
            subset = dataset.select(chosen)
            if cfg.keep_scores:
                for column in SCORE_COLUMNS:
                    subset = subset.add_column(column, np.asarray(self.scores_[column])[chosen].tolist())
        return subset

    def _decide(self, dataset, embeddings, jsd, lengths, truncated, empty, cut_away, concepts, budget, vocab,
                dataset_format, timings) -> dict:
        """Clustering, CDS, IES and the selection loop (main process); returns the fitted attributes."""
        cfg = self.config
        n = len(dataset)
        t0 = time.perf_counter()
        clustering = cluster_instructions(embeddings, config=cfg)
        timings["clustering"] = time.perf_counter() - t0
        rng = np.random.default_rng(cfg.seed)
        labels = np.asarray(clustering.labels, dtype=np.int64)
        k = int(clustering.k)
        if not cfg.use_clustering:
            labels = rng.integers(0, k, size=n)
        candidate_mask = ~empty & ~cut_away

        t0 = time.perf_counter()
        ies = individual_efficiency(np.nan_to_num(jsd, nan=0.0), lengths)
        ies[~candidate_mask] = np.nan
        members = [(labels == c) & candidate_mask for c in range(k)]
        cds = np.array([float(jsd[m].mean()) if m.any() else 0.0 for m in members])
        status, allocated, selected, rejected, graph, fallback = self._select_loop(
            labels, k, cds, np.nan_to_num(ies, nan=-np.inf), candidate_mask, concepts, budget, rng
        )
        status[empty] = SKIPPED_EMPTY
        status[cut_away] = SKIPPED_TRUNCATED
        timings["selection"] = time.perf_counter() - t0

        chosen = np.flatnonzero(status == SELECTED)
        warn_list = [fallback] if fallback else []
        if len(chosen) < budget:
            warn_list.append(
                f"Selected {len(chosen)} rows, fewer than the budget of {budget}: only {int(candidate_mask.sum())} "
                f"rows could be scored ({int(empty.sum())} with an empty response, {int(cut_away.sum())} whose "
                f"response was cut away by max_length={cfg.max_length}) and {int((status == REJECTED).sum())} were "
                "rejected by the concept-consistency check."
            )
        if truncated.any():
            warn_list.append(
                f"{int(truncated.sum())} rows were longer than max_length={cfg.max_length} tokens and were truncated "
                "for scoring (as the trainer truncates them)."
            )
        scores = {
            "index": np.arange(n),
            "paser_cluster": labels,
            "paser_jsd": jsd,
            "paser_ies": ies,
            "paser_concepts": [list(c) for c in concepts],
            "paser_status": status.tolist(),
        }
        report = SelectionReport(
            num_rows=n,
            budget=budget,
            num_selected=len(chosen),
            k=k,
            k_curve={int(key): float(v) for key, v in clustering.k_curve.items()},
            clusters=[
                ClusterStats(
                    cluster=c,
                    size=int((labels == c).sum()),
                    candidates=int(members[c].sum()),
                    cds=float(cds[c]),
                    allocated=int(allocated[c]),
                    selected=int(selected[c]),
                    rejected=int(rejected[c]),
                    mean_ies=float(ies[members[c]].mean()) if members[c].any() else 0.0,
                )
                for c in range(k)
            ],
            clustering=clustering.to_dict(),
            concept_graph={"nodes": graph.num_nodes, "edges": graph.num_edges},
            num_truncated=int(truncated.sum()),
            scored_tokens=int(lengths[candidate_mask].sum()),
            num_skipped_empty_response=int(empty.sum() + cut_away.sum()),
            allocation_fallback=fallback,
            timings={key: round(v, 3) for key, v in timings.items()},
            config=cfg.to_dict(),
            dataset_format=dataset_format,
            models={
                "original": _model_name(self.original_model),
                "pruned": _model_name(self.pruned_model),
                "vocabulary": vocab,
                "paser_hf_version": __version__,
                "dataset_fingerprint": dataset._fingerprint,
            },
            warnings=warn_list,
        )
        return {
            "selected_indices_": chosen,
            "clustering_": clustering,
            "concept_graph_": graph,
            "scores_": Dataset.from_dict(scores),
            "report_": report,
        }


def _model_name(model) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)
