"""Baselines PASER is compared against, with the selector's call shape: ``subset = selector(dataset)``.

- `RandomSelector`: B rows drawn uniformly at random without replacement (seeded).
- `IfdSelector`: Instruction-Following Difficulty (Li et al., NAACL 2024, "From Quantity to Quality"),

      IFD(x, y) = L(y | x) / L(y),   L(y | x) = mean_t -log p(y_t | x, y_<t),   L(y) = mean_t -log p(y_t | y_<t)

  over the response tokens y_t of the training sequence, scored by one model (the benchmarks pass the pruned
  one). Only the positions that predict a response token go through the LM head, a chunk at a time.
"""

from __future__ import annotations

import time
import warnings
from typing import Optional

import numpy as np
import torch
from datasets import Dataset
from datasets.fingerprint import Hasher
from tqdm.auto import tqdm

from .. import __version__
from ..caching import combine
from ..formatting import (
    detect_format,
    make_row_formatter,
    resolve_chat_template,
    response_text,
    tokenize_prompt_completion,
)
from ..reporting.report import BaselineReport
from .config import PaserConfig
from .divergence import BatchFitter, JsdScorer, _ResponseLogits, default_chunk_tokens, pad_batch, warn_if_emulated_bf16
from .selector import SELECTED, SKIPPED_EMPTY, SKIPPED_TRUNCATED, _datasets_bars, _model_name, check_dataset

NOT_SELECTED = "not_selected"
SKIPPED_SHORT = "skipped_short_response"


class _Baseline:
    def __init__(self, config: Optional[PaserConfig] = None):
        self.config = config if config is not None else PaserConfig()

    def __call__(self, dataset: Dataset) -> Dataset:
        return self.select(dataset)

    def _finish(self, dataset: Dataset, chosen: np.ndarray, scores: dict, report: BaselineReport) -> Dataset:
        self.selected_indices_ = chosen
        self.scores_ = Dataset.from_dict(scores)
        self.report_ = report
        for message in report.warnings:
            warnings.warn(message, stacklevel=3)
        return dataset.select(chosen)


class RandomSelector(_Baseline):
    """B = `config.budget_rows(N)` rows uniformly at random: row i gets a key u_i ~ U[0, 1) from
    ``numpy.random.default_rng(config.seed)`` and the B smallest keys are selected.

    After a call: ``selected_indices_`` (sorted), ``scores_`` (a `Dataset`: ``index``, ``random_key``,
    ``status``) and ``report_`` (a `BaselineReport`).
    """

    def select(self, dataset: Dataset) -> Dataset:
        """The selected rows with every original column, in their original order."""
        check_dataset(dataset)
        n = len(dataset)
        budget = self.config.budget_rows(n)
        start = time.perf_counter()
        keys = np.random.default_rng(self.config.seed).random(n)
        chosen = np.sort(np.argsort(keys, kind="stable")[:budget])
        status = np.full(n, NOT_SELECTED, dtype=object)
        status[chosen] = SELECTED
        report = BaselineReport(
            method="random",
            num_rows=n,
            budget=budget,
            num_selected=len(chosen),
            timings={"selection": round(time.perf_counter() - start, 3)},
            config=self.config.to_dict(),
        )
        return self._finish(dataset, chosen, {"index": np.arange(n), "random_key": keys, "status": status.tolist()},
                            report)


def ifd_ranking(ifd: np.ndarray, max_ifd: Optional[float] = 1.0) -> np.ndarray:
    """Row indices in selection order: IFD < `max_ifd` by descending IFD, then IFD >= `max_ifd` by ascending IFD
    (nearest the threshold first); ties by row index. NaN rows (not scored) are left out."""
    scored = np.flatnonzero(~np.isnan(ifd))
    values = ifd[scored]
    above = np.zeros(len(scored), dtype=bool) if max_ifd is None else values >= max_ifd
    return scored[np.lexsort((scored, np.where(above, values, -values), above))]


class IfdSelector(_Baseline):
    """Instruction-Following Difficulty selection (Li et al., NAACL 2024): IFD(x, y) = L(y | x) / L(y).

    L(y | x) is the mean cross-entropy, logsumexp(z) - z[y_t] in float32, of the response tokens of the training
    sequence (formatted, tokenised and truncated to `max_length` as the selector and `trl.SFTTrainer` do); L(y)
    the same over the same tokens given no instruction: the response ids alone, preceded by the tokenizer's BOS.
    With a BOS every response token is scored; without one (or with an empty prompt) the first response token has
    no context, so both losses average over response tokens 2..n.

    Ranking: rows with IFD < `max_ifd` by descending IFD (Li et al. drop IFD > 1: the instruction does not help),
    then rows at or above it, nearest the threshold first, so the budget is always filled; `max_ifd=None`
    disables the threshold. Rows with an empty response, or none of it left to score after truncation, are never
    selected.

    After a call: ``selected_indices_``, ``scores_`` (``index``, ``ifd``, ``loss_conditioned``, ``loss_response``,
    ``status``) and ``report_`` (a `BaselineReport`).
    """

    def __init__(self, model=None, tokenizer=None, config: Optional[PaserConfig] = None,
                 max_ifd: Optional[float] = 1.0):
        super().__init__(config)
        if max_ifd is not None and not max_ifd > 0:
            raise ValueError(f"max_ifd={max_ifd!r}; give a number > 0 (Li et al. use 1.0) or None for no threshold.")
        self.model = model
        self.tokenizer = tokenizer
        self.max_ifd = max_ifd

    def select(self, dataset: Dataset) -> Dataset:
        """The B top-ranked rows with every original column, in their original order."""
        check_dataset(dataset)
        if self.model is None or self.tokenizer is None:
            raise ValueError(
                "IfdSelector needs the scoring model and its tokenizer: IfdSelector(model, tokenizer, config)."
            )
        cfg, tokenizer, max_ifd = self.config, self.tokenizer, self.max_ifd
        n = len(dataset)
        budget = cfg.budget_rows(n)
        dataset_format = detect_format(dataset.column_names, cfg.dataset_format)
        chat = resolve_chat_template(tokenizer, cfg.use_chat_template)

        timings = {}
        start = time.perf_counter()
        with _datasets_bars(cfg.show_progress):
            prepared = self._prepare(dataset, dataset_format, chat)
        lengths = np.asarray(prepared["length"], dtype=np.int64)
        starts = np.asarray(prepared["response_start"], dtype=np.int64)
        truncated = np.asarray(prepared["truncated"], dtype=bool)
        timings["prepare"] = time.perf_counter() - start

        first = ((tokenizer.bos_token_id is None) | (starts == 0)).astype(np.int64)
        targets = np.maximum(lengths - starts - first, 0)
        empty = np.asarray(prepared["empty"], dtype=bool) | (lengths == starts) & ~truncated
        unscorable = ~empty & (targets == 0)
        cut_away = unscorable & truncated
        too_short = unscorable & ~truncated
        candidates = np.flatnonzero(~empty & ~unscorable)

        start = time.perf_counter()
        loss_c, loss_r = self._losses(prepared, candidates, lengths, first)
        timings["scoring"] = time.perf_counter() - start

        start = time.perf_counter()
        with np.errstate(divide="ignore", invalid="ignore"):
            ifd = loss_c / loss_r
        chosen = np.sort(ifd_ranking(ifd, max_ifd)[:budget])
        status = np.full(n, NOT_SELECTED, dtype=object)
        status[chosen] = SELECTED
        status[empty] = SKIPPED_EMPTY
        status[cut_away] = SKIPPED_TRUNCATED
        status[too_short] = SKIPPED_SHORT
        timings["selection"] = time.perf_counter() - start

        above = 0 if max_ifd is None else int((ifd[candidates] >= max_ifd).sum())
        above_used = 0 if max_ifd is None else int((ifd[chosen] >= max_ifd).sum())
        warn_list = []
        if above_used:
            warn_list.append(
                f"{above_used} of the {len(chosen)} selected rows have IFD >= max_ifd={max_ifd} (the instruction does "
                f"not lower the response loss): only {len(candidates) - above} scored rows lie below it."
            )
        if len(chosen) < budget:
            warn_list.append(
                f"Selected {len(chosen)} rows, fewer than the budget of {budget}: only {len(candidates)} rows could "
                f"be scored ({int(empty.sum())} with an empty response, {int(cut_away.sum())} whose response was cut "
                f"away by max_length={cfg.max_length}, {int(too_short.sum())} with a one-token response and no BOS "
                "token to predict it from)."
            )
        if truncated.any():
            warn_list.append(
                f"{int(truncated.sum())} rows were longer than max_length={cfg.max_length} tokens and were truncated "
                "for scoring (as the trainer truncates them)."
            )
        report = BaselineReport(
            method="ifd",
            num_rows=n,
            budget=budget,
            num_selected=len(chosen),
            timings={key: round(value, 3) for key, value in timings.items()},
            config=cfg.to_dict(),
            models={"scoring": _model_name(self.model), "paser_hf_version": __version__},
            details={
                "max_ifd": None if max_ifd is None else float(max_ifd),
                "dataset_format": dataset_format,
                "bos_prefix": tokenizer.bos_token_id is not None,
                "num_scored": len(candidates),
                "num_at_or_above_max_ifd": above,
                "num_at_or_above_max_ifd_selected": above_used,
                "num_skipped_empty_response": int(empty.sum()),
                "num_skipped_truncated_response": int(cut_away.sum()),
                "num_skipped_short_response": int(too_short.sum()),
                "num_truncated": int(truncated.sum()),
                "scored_tokens": int(lengths[candidates].sum()),
                "target_tokens": int(targets[candidates].sum()),
            },
            warnings=warn_list,
        )
        scores = {
            "index": np.arange(n),
            "ifd": ifd,
            "loss_conditioned": loss_c,
            "loss_response": loss_r,
            "status": status.tolist(),
        }
        return self._finish(dataset, chosen, scores, report)

    def _prepare(self, dataset: Dataset, dataset_format: str, chat: bool) -> Dataset:
        """Every row's training sequence: token ids, length, where the response starts, truncated, empty."""
        cfg, tokenizer = self.config, self.tokenizer
        formatter = make_row_formatter(dataset_format, chat)

        def prepare(batch):
            out = {key: [] for key in ("input_ids", "length", "response_start", "truncated", "empty")}
            for values in zip(*batch.values()):
                row = dict(zip(batch, values))
                pc = formatter(row)
                tokens = tokenize_prompt_completion(pc["prompt"], pc["completion"], tokenizer, cfg.max_length)
                out["input_ids"].append(tokens["input_ids"])
                out["length"].append(len(tokens["input_ids"]))
                out["response_start"].append(tokens["response_start"])
                out["truncated"].append(tokens["truncated"])
                out["empty"].append(not response_text(row, dataset_format).strip())
            return out

        fingerprint = combine(
            "ifd-prepare-v1", dataset._fingerprint, Hasher.hash(tokenizer), dataset_format, chat, cfg.max_length
        )
        return dataset.map(
            prepare,
            batched=True,
            remove_columns=dataset.column_names,
            new_fingerprint=fingerprint,
            desc="IFD: formatting and tokenising",
        )

    def _losses(self, prepared: Dataset, candidates: np.ndarray, lengths: np.ndarray, first: np.ndarray):
        """L(y | x) and L(y) of every candidate row (NaN elsewhere); rows longest first, packed into batches of at
        most `scoring_tokens_per_batch` padded tokens (`BatchFitter`); response token j is a target from j =
        first[row] on."""
        cfg, model = self.config, self.model
        bos = self.tokenizer.bos_token_id
        prefix = [] if bos is None else [bos]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        pad_id = 0 if pad_id is None else pad_id
        loss_c = np.full(len(prepared), np.nan)
        loss_r = np.full(len(prepared), np.nan)
        order = candidates[np.argsort(-lengths[candidates], kind="stable")]
        columns = prepared.select_columns(["input_ids", "response_start"])
        warn_if_emulated_bf16(model)
        head = _ResponseLogits(model)
        batches = BatchFitter(cfg.scoring_tokens_per_batch, head.device)
        chunk_tokens = default_chunk_tokens(head.device) if cfg.jsd_chunk_tokens is None else cfg.jsd_chunk_tokens
        bar = tqdm(total=int(lengths[order].sum()), unit="tok", unit_scale=True, desc="IFD scoring",
                   disable=not cfg.show_progress)
        was_training = model.training
        model.eval()
        try:
            for begin in range(0, len(order), cfg.scoring_shard_rows):
                rows = order[begin : begin + cfg.scoring_shard_rows]
                part = columns.select(rows)
                all_ids, all_starts = part["input_ids"], part["response_start"]

                def score(group):
                    index = rows[group]
                    full, full_pos, alone, alone_pos, target_ids = [], [], [], [], []
                    for g, row in zip(group, index):
                        ids, s, f = all_ids[g], all_starts[g], int(first[row])
                        response = ids[s:]
                        full.append(ids)
                        full_pos.append(range(s + f - 1, len(ids) - 1))
                        alone.append(prefix + response)
                        alone_pos.append(range(len(prefix) + f - 1, len(prefix) + len(response) - 1))
                        target_ids.extend(response[f:])
                    loss_c[index] = _mean_cross_entropy(head, full, full_pos, target_ids, index, pad_id,
                                                        chunk_tokens)
                    loss_r[index] = _mean_cross_entropy(head, alone, alone_pos, target_ids, index, pad_id,
                                                        chunk_tokens)
                    bar.update(int(lengths[index].sum()))

                batches.run(lengths[rows].tolist(), score, row_ids=rows.tolist())
        finally:
            model.train(was_training)
            bar.close()
        return loss_c, loss_r


@torch.inference_mode()
def _mean_cross_entropy(head: _ResponseLogits, sequences, positions, target_ids, row_ids, pad_id: int,
                        chunk_tokens: int) -> np.ndarray:
    """Per sequence, the mean over its `positions` p of logsumexp(z_p) - z_p[target] (float32 maths), from one
    right-padded batch; `target_ids` lists the targets of every position, sequence after sequence."""
    ids, mask, rows_t, cols_t = pad_batch(sequences, positions, pad_id)
    head.prepare(ids, mask, rows_t, cols_t)
    targets = torch.tensor(target_ids, dtype=torch.long, device=head.device)
    losses = torch.empty(len(rows_t), dtype=torch.float32, device=head.device)
    for start in range(0, len(rows_t), chunk_tokens):
        stop = min(start + chunk_tokens, len(rows_t))
        z = head.chunk(start, stop)
        JsdScorer._check_finite(z, "scoring", rows_t[start:stop], row_ids)
        losses[start:stop] = torch.logsumexp(z, dim=-1) - z.gather(1, targets[start:stop, None])[:, 0]
    head.selected = None
    sums = torch.zeros(len(sequences), dtype=torch.float64, device=head.device)
    sums.index_add_(0, rows_t.to(head.device), losses.double())
    return (sums.cpu() / torch.bincount(rows_t, minlength=len(sequences))).numpy()
