"""Baselines PASER is compared against, with the selector's call shape: ``subset = selector(dataset)``, a row or
token budget (`PaserConfig.budget_unit`), seeded.

- `RandomSelector`: rows in a seeded random order until the budget is filled.
- `ClusterBalancedSelector`: random rows, an equal share of the budget from each of PASER's clusters (capped by
  the cluster, the rest handed on); Xia et al. 2024 and Ivison et al. 2025 find random selection hard to beat,
  and balance over capabilities is its strongest form.
- `LongestSelector`: longest responses first (Zhao et al., ICML 2024, "Long Is More for Alignment").
- `IfdSelector`: Instruction-Following Difficulty (Li et al., NAACL 2024, "From Quantity to Quality"),

      IFD(x, y) = L(y | x) / L(y),   L(y | x) = mean_t -log p(y_t | x, y_<t),   L(y) = mean_t -log p(y_t | y_<t)

  over the response tokens y_t of the training sequence, scored by one model (the benchmarks pass the pruned
  one) with PASER's prepare stage and scoring machinery: response positions only, cached resumable shards.

Under a token budget each baseline takes rows in its order while the tokens taken are below B
(`take_in_order`), so it ends within one row of B.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset

from .. import __version__
from ..caching import combine, model_fingerprint, progress_bars
from ..formatting import resolve_chat_template
from ..reporting.report import BaselineReport, token_summary
from . import schema
from .algorithm import run_algorithm
from .allocation import take_in_order
from .clustering import cluster_instructions
from .config import PaserConfig
from .embedding import embed_rows, load_embedder
from .prepare import PreparedRows, prepare_dataset, resolve_format, truncation_warning
from .scoring import (
    BatchFitter,
    ResponseLogits,
    check_finite_logits,
    gather_scores,
    model_name,
    pad_batch,
    pad_token_id,
    scored_shards,
    scoring_sizes,
    warn_if_emulated_bf16,
)
from .timing import Stopwatch


class _Baseline:
    """What the baselines share: the config, the call, the prepare stage and the finish (status, report)."""

    method = ""

    def __init__(self, config: Optional[PaserConfig] = None):
        self.config = config if config is not None else PaserConfig()

    def __call__(self, dataset: Dataset) -> Dataset:
        return self.select(dataset)

    def _prepare(self, dataset: Dataset, tokenizer, stopwatch: Stopwatch):
        """(prepared dataset, its `PreparedRows`, the budget in the config's unit), as PASER prepares rows."""
        cfg = self.config
        if tokenizer is None:
            raise ValueError(
                f"{type(self).__name__} needs the tokenizer the recovery trainer uses, to format and count tokens: "
                f"{type(self).__name__}(tokenizer=tok, config=config)."
            )
        with stopwatch("prepare"), progress_bars(cfg.show_progress):
            prepared = prepare_dataset(dataset, tokenizer, cfg, resolve_format(dataset, cfg),
                                       resolve_chat_template(tokenizer, cfg.use_chat_template),
                                       desc=f"{self.method}: formatting and tokenising")
        rows = PreparedRows.of(prepared)
        return prepared, rows, cfg.budget_for(rows.lengths)

    def _finish(self, dataset: Dataset, chosen: np.ndarray, scores: dict, budget: int,
                lengths: Optional[np.ndarray], stopwatch: Stopwatch, models: Optional[dict] = None,
                details: Optional[dict] = None, warn_list: Sequence[str] = ()) -> Dataset:
        n = len(dataset)
        chosen = np.sort(np.asarray(chosen, dtype=np.int64))
        if "status" not in scores:
            status = np.full(n, schema.NOT_SELECTED, dtype=object)
            status[chosen] = schema.SELECTED
            scores["status"] = status.tolist()
        cfg = self.config
        filled = len(chosen) if cfg.budget_unit == "rows" else int(lengths[chosen].sum())
        messages = list(warn_list)
        if filled < budget:
            messages.append(f"Selected {filled} {cfg.budget_unit}, fewer than the budget of {budget}: the rows "
                            f"{self.method} may select hold no more.")
        self.selected_indices_ = chosen
        self.scores_ = Dataset.from_dict({"index": np.arange(n), **scores})
        self.report_ = BaselineReport(
            method=self.method,
            num_rows=n,
            budget=budget,
            budget_unit=cfg.budget_unit,
            num_selected=len(chosen),
            tokens={} if lengths is None else token_summary(lengths, chosen),
            timings=stopwatch.timings(),
            config=cfg.to_dict(),
            models={**(models or {}), "paser_hf_version": __version__},
            details=details or {},
            warnings=messages,
        )
        for message in self.report_.warnings:
            warnings.warn(message, stacklevel=3)
        return dataset.select(chosen)


class RandomSelector(_Baseline):
    """Rows in a seeded random order until the budget is filled: row i gets a key u_i ~ U[0, 1) from
    ``numpy.random.default_rng(config.seed)`` and rows are taken by ascending key, B of them under a row budget
    and while the tokens taken are below B under a token budget (which needs the `tokenizer`).

    After a call: ``selected_indices_`` (sorted), ``scores_`` (a `Dataset`: ``index``, ``random_key``,
    ``status``) and ``report_`` (a `BaselineReport`).
    """

    method = "random"

    def __init__(self, config: Optional[PaserConfig] = None, tokenizer=None):
        super().__init__(config)
        self.tokenizer = tokenizer

    def select(self, dataset: Dataset) -> Dataset:
        """The selected rows with every original column, in their original order."""
        dataset = schema.materialize(dataset, self.config.cache_dir, self.config.show_progress)
        schema.check_dataset(dataset)
        cfg, n, stopwatch = self.config, len(dataset), Stopwatch()
        lengths = None
        if self.tokenizer is not None or cfg.budget_unit == "tokens":
            _, rows, budget = self._prepare(dataset, self.tokenizer, stopwatch)
            lengths = rows.lengths
        else:
            budget = cfg.budget_rows(n)
        with stopwatch("selection"):
            keys = np.random.default_rng(cfg.seed).random(n)
            order = np.argsort(keys, kind="stable")
            costs = np.ones(n, dtype=np.int64) if lengths is None else cfg.row_costs(lengths)
            chosen = take_in_order(order, costs, budget)
        return self._finish(dataset, chosen, {"random_key": keys}, budget, lengths, stopwatch)


class LongestSelector(_Baseline):
    """Longest responses first (Zhao et al., ICML 2024, "Long Is More for Alignment"): rows by descending number
    of response tokens as the trainer sees them (after truncation to `max_length`), ties by row index, until
    the budget is filled. Rows with an empty response are never selected.

    After a call: ``selected_indices_``, ``scores_`` (``index``, ``response_tokens``, ``status``) and ``report_``.
    """

    method = "longest"

    def __init__(self, tokenizer=None, config: Optional[PaserConfig] = None):
        super().__init__(config)
        self.tokenizer = tokenizer

    def select(self, dataset: Dataset) -> Dataset:
        """The selected rows with every original column, in their original order."""
        dataset = schema.materialize(dataset, self.config.cache_dir, self.config.show_progress)
        schema.check_dataset(dataset)
        cfg, stopwatch = self.config, Stopwatch()
        _, rows, budget = self._prepare(dataset, self.tokenizer, stopwatch)
        with stopwatch("selection"):
            candidates = np.flatnonzero(~rows.empty & ~rows.cut_away)
            order = candidates[np.lexsort((candidates, -rows.response_tokens[candidates]))]
            chosen = take_in_order(order, cfg.row_costs(rows.lengths), budget)
        return self._finish(dataset, chosen, {"response_tokens": rows.response_tokens}, budget, rows.lengths,
                            stopwatch)


class ClusterBalancedSelector(_Baseline):
    """Random rows, an equal share of the budget from each of PASER's clusters (S²RIC on the same embeddings and
    settings as `PaserDatasetSelector`): the budget is split equally over the clusters, capped by what each holds
    with the rest handed on (`allocate` with equal weights), and each cluster's rows are taken in a seeded random
    order. No model divergence and no concept check: the balanced form of random selection that Xia et al. 2024
    (LESS) and Ivison et al. 2025 find hard to beat.

    After a call: ``selected_indices_``, ``scores_`` (``index``, ``cluster``, ``random_key``, ``status``),
    ``report_`` (per-cluster counts in ``details``) and ``clustering_``.
    """

    method = "cluster_balanced"

    def __init__(self, tokenizer=None, config: Optional[PaserConfig] = None, embedder=None):
        super().__init__(config)
        self.tokenizer = tokenizer
        self.embedder = embedder

    def select(self, dataset: Dataset) -> Dataset:
        """The selected rows with every original column, in their original order."""
        dataset = schema.materialize(dataset, self.config.cache_dir, self.config.show_progress)
        schema.check_dataset(dataset)
        cfg, stopwatch = self.config, Stopwatch()
        prepared, rows, budget = self._prepare(dataset, self.tokenizer, stopwatch)
        state = PartialState(cpu=not torch.cuda.is_available())
        with stopwatch("embedding"):
            embedder = self.embedder if self.embedder is not None else load_embedder(cfg.embedding_model)
            embeddings = embed_rows(prepared, embedder, cfg, state)
        with stopwatch("clustering"):
            clustering = cluster_instructions(embeddings, config=cfg)
        with stopwatch("selection"):
            keys = np.random.default_rng(cfg.seed).random(len(dataset))
            candidates = ~rows.empty & ~rows.cut_away
            result = run_algorithm(clustering.labels, np.ones(clustering.k), -keys, candidates, budget,
                                   costs=cfg.row_costs(rows.lengths))
        self.clustering_ = clustering
        details = {
            "k": int(clustering.k),
            "allocated": result.first_allocation.tolist(),
            "selected_per_cluster": result.accepted.tolist(),
            "cluster_sizes": np.bincount(clustering.labels, minlength=clustering.k).tolist(),
        }
        scores = {"cluster": np.asarray(clustering.labels), "random_key": keys}
        return self._finish(dataset, result.selected, scores, budget, rows.lengths, stopwatch, details=details)


def ifd_ranking(ifd: np.ndarray, max_ifd: Optional[float] = 1.0) -> np.ndarray:
    """Row indices in selection order: IFD < `max_ifd` by descending IFD, then IFD >= `max_ifd` by ascending IFD
    (nearest the threshold first); ties by row index. NaN rows (not scored) are left out."""
    scored = np.flatnonzero(~np.isnan(ifd))
    values = ifd[scored]
    above = np.zeros(len(scored), dtype=bool) if max_ifd is None else values >= max_ifd
    return scored[np.lexsort((scored, np.where(above, values, -values), above))]


class IfdScorer:
    """The `.map` function of IFD scoring: L(y | x) and L(y) of each row of a batch (``loss_conditioned``,
    ``loss_response``).

    A loss is the mean of logsumexp(z) - z[y_t] (float32 maths) over the response tokens y_t, from the full
    sequence for L(y | x) and from the response ids alone after `bos_token_id` for L(y). Without a BOS token (or
    with an empty prompt) the first response token has no context, so both average over tokens 2..n.
    """

    def __init__(self, model, bos_token_id: Optional[int], pad_token_id: int, tokens_per_batch: Optional[int] = None,
                 chunk_tokens: Optional[int] = None, progress=None):
        warn_if_emulated_bf16(model)
        self.head = ResponseLogits(model)
        self.bos_token_id = bos_token_id
        self.prefix = [] if bos_token_id is None else [bos_token_id]
        self.pad_token_id = pad_token_id
        tokens, self.chunk_tokens = scoring_sizes(self.head.device, tokens_per_batch, chunk_tokens)
        self.batches = BatchFitter(tokens)
        self.progress = progress

    def __call__(self, batch: dict) -> dict:
        ids, starts, row_ids = batch[schema.INPUT_IDS], batch[schema.RESPONSE_START], batch[schema.INDEX]
        lengths = [len(seq) for seq in ids]
        conditioned = [0.0] * len(ids)
        alone = [0.0] * len(ids)

        def score(group):
            full, full_pos, response_only, response_pos, targets = [], [], [], [], []
            for g in group:
                s = starts[g]
                first = 1 if self.bos_token_id is None or s == 0 else 0
                response = ids[g][s:]
                full.append(ids[g])
                full_pos.append(range(s + first - 1, len(ids[g]) - 1))
                response_only.append(self.prefix + response)
                response_pos.append(range(len(self.prefix) + first - 1, len(self.prefix) + len(response) - 1))
                targets.extend(response[first:])
            group_ids = [row_ids[g] for g in group]
            for out, sequences, positions in ((conditioned, full, full_pos), (alone, response_only, response_pos)):
                for g, loss in zip(group, self.mean_cross_entropy(sequences, positions, targets, group_ids)):
                    out[g] = float(loss)
            if self.progress is not None:
                self.progress(sum(lengths[g] for g in group))

        self.batches.run(lengths, score, row_ids=row_ids)
        return {schema.LOSS_CONDITIONED: conditioned, schema.LOSS_RESPONSE: alone}

    @torch.inference_mode()
    def mean_cross_entropy(self, sequences, positions, target_ids: List[int], row_ids: Sequence[int]) -> np.ndarray:
        """Per sequence, the mean over its `positions` p of logsumexp(z_p) - z_p[target], from one right-padded
        batch; `target_ids` lists the targets of every position, sequence after sequence."""
        head = self.head
        ids, mask, rows_t, cols_t = pad_batch(sequences, positions, self.pad_token_id)
        targets = torch.tensor(target_ids, dtype=torch.long, device=head.device)
        losses = torch.empty(len(rows_t), dtype=torch.float32, device=head.device)
        try:
            head.prepare(ids, mask, rows_t, cols_t)
            for start in range(0, len(rows_t), self.chunk_tokens):
                stop = min(start + self.chunk_tokens, len(rows_t))
                z = head.chunk(start, stop)
                check_finite_logits(z, "scoring", rows_t[start:stop], row_ids)
                losses[start:stop] = torch.logsumexp(z, dim=-1) - z.gather(1, targets[start:stop, None])[:, 0]
        finally:
            head.selected = None
        sums = torch.zeros(len(sequences), dtype=torch.float64, device=head.device)
        sums.index_add_(0, rows_t.to(head.device), losses.double())
        return (sums.cpu() / torch.bincount(rows_t, minlength=len(sequences))).numpy()


def ifd_losses(prepared: Dataset, rows: np.ndarray, model, tokenizer, config: PaserConfig):
    """(L(y | x), L(y)) of each of `rows` (NaN for the others), scored longest first in cached shards keyed by
    their rows, the model and the BOS token (`scored_shards`), so a killed run resumes like PASER's JSD."""
    bos = tokenizer.bos_token_id
    fingerprint = combine("ifd-v1", prepared._fingerprint, model_fingerprint(model), bos)

    def make_scorer(progress):
        return IfdScorer(model, bos, pad_token_id(tokenizer), config.scoring_tokens_per_batch,
                         config.jsd_chunk_tokens, progress)

    was_training = model.training
    model.eval()
    try:
        shards = scored_shards(prepared, rows, make_scorer, "ifd", fingerprint, config.cache_dir,
                               config.scoring_shard_rows, "IFD scoring", config.show_progress)
        losses = gather_scores(shards, (schema.LOSS_CONDITIONED, schema.LOSS_RESPONSE), len(prepared))
    finally:
        model.train(was_training)
    return losses[schema.LOSS_CONDITIONED], losses[schema.LOSS_RESPONSE]


class IfdSelector(_Baseline):
    """Instruction-Following Difficulty selection (Li et al., NAACL 2024): IFD(x, y) = L(y | x) / L(y).

    L(y | x) is the mean cross-entropy, logsumexp(z) - z[y_t] in float32, of the response tokens of the training
    sequence (formatted, tokenised and truncated to `max_length` as the selector and `trl.SFTTrainer` do); L(y)
    the same over the same tokens given no instruction: the response ids alone, preceded by the tokenizer's BOS.
    With a BOS every response token is scored; without one (or with an empty prompt) the first response token has
    no context, so both losses average over response tokens 2..n. The losses are cached per shard in
    `cache_dir` as PASER's JSD is.

    Ranking: rows with IFD < `max_ifd` by descending IFD (Li et al. drop IFD > 1: the instruction does not help),
    then rows at or above it, nearest the threshold first, so the budget is always filled; `max_ifd=None`
    disables the threshold. Rows with an empty response, or none of it left to score after truncation, are never
    selected.

    After a call: ``selected_indices_``, ``scores_`` (``index``, ``ifd``, ``loss_conditioned``, ``loss_response``,
    ``status``) and ``report_`` (a `BaselineReport`).
    """

    method = "ifd"

    def __init__(self, model=None, tokenizer=None, config: Optional[PaserConfig] = None,
                 max_ifd: Optional[float] = 1.0):
        super().__init__(config)
        if max_ifd is not None and not max_ifd > 0:
            raise ValueError(f"max_ifd={max_ifd!r}; give a number > 0 (Li et al. use 1.0) or None for no threshold.")
        self.model = model
        self.tokenizer = tokenizer
        self.max_ifd = max_ifd

    def select(self, dataset: Dataset) -> Dataset:
        """The top-ranked rows that fill the budget, with every original column, in their original order."""
        dataset = schema.materialize(dataset, self.config.cache_dir, self.config.show_progress)
        schema.check_dataset(dataset)
        if self.model is None or self.tokenizer is None:
            raise ValueError(
                "IfdSelector needs the scoring model and its tokenizer: IfdSelector(model, tokenizer, config)."
            )
        cfg, tokenizer, max_ifd = self.config, self.tokenizer, self.max_ifd
        n = len(dataset)
        stopwatch = Stopwatch()
        prepared, rows, budget = self._prepare(dataset, tokenizer, stopwatch)
        first = ((tokenizer.bos_token_id is None) | (rows.response_starts == 0)).astype(np.int64)
        targets = np.maximum(rows.lengths - rows.response_starts - first, 0)
        unscorable = ~rows.empty & (targets == 0)
        cut_away = unscorable & rows.truncated
        too_short = unscorable & ~rows.truncated
        candidates = np.flatnonzero(~rows.empty & ~unscorable)

        with stopwatch("scoring"):
            loss_c, loss_r = ifd_losses(prepared, candidates, self.model, tokenizer, cfg)

        with stopwatch("selection"):
            with np.errstate(divide="ignore", invalid="ignore"):
                ifd = loss_c / loss_r
            chosen = np.sort(take_in_order(ifd_ranking(ifd, max_ifd), cfg.row_costs(rows.lengths), budget))
            status = np.full(n, schema.NOT_SELECTED, dtype=object)
            status[chosen] = schema.SELECTED
            status[rows.empty] = schema.SKIPPED_EMPTY
            status[cut_away] = schema.SKIPPED_TRUNCATED
            status[too_short] = schema.SKIPPED_SHORT

        above = 0 if max_ifd is None else int((ifd[candidates] >= max_ifd).sum())
        above_used = 0 if max_ifd is None else int((ifd[chosen] >= max_ifd).sum())
        warn_list = []
        if above_used:
            warn_list.append(
                f"{above_used} of the {len(chosen)} selected rows have IFD >= max_ifd={max_ifd} (the instruction does "
                f"not lower the response loss): only {len(candidates) - above} scored rows lie below it."
            )
        if len(chosen) == len(candidates) and len(chosen) < n:
            warn_list.append(
                f"Only {len(candidates)} rows could be scored ({int(rows.empty.sum())} with an empty response, "
                f"{int(cut_away.sum())} whose response was cut away by max_length={cfg.max_length}, "
                f"{int(too_short.sum())} with a one-token response and no BOS token to predict it from)."
            )
        truncated = truncation_warning(int(rows.truncated.sum()), cfg.max_length)
        warn_list += [truncated] if truncated else []
        details = {
            "max_ifd": None if max_ifd is None else float(max_ifd),
            "dataset_format": resolve_format(dataset, cfg),
            "bos_prefix": tokenizer.bos_token_id is not None,
            "num_scored": len(candidates),
            "num_at_or_above_max_ifd": above,
            "num_at_or_above_max_ifd_selected": above_used,
            "num_skipped_empty_response": int(rows.empty.sum()),
            "num_skipped_truncated_response": int(cut_away.sum()),
            "num_skipped_short_response": int(too_short.sum()),
            "num_truncated": int(rows.truncated.sum()),
            "scored_tokens": int(rows.lengths[candidates].sum()),
            "target_tokens": int(targets[candidates].sum()),
        }
        scores = {"ifd": ifd, schema.LOSS_CONDITIONED: loss_c, schema.LOSS_RESPONSE: loss_r, "status": status.tolist()}
        return self._finish(dataset, chosen, scores, budget, rows.lengths, stopwatch,
                            models={"scoring": model_name(self.model)}, details=details, warn_list=warn_list)
