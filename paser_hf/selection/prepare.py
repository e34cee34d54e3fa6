"""The prepare stage of PASER and the baselines: every row formatted and tokenised as the recovery trainer sees
it (`paser_hf.formatting`), with the texts that are embedded and that concepts come from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from datasets import Dataset
from datasets.fingerprint import Hasher

from ..caching import cached_map, combine
from ..formatting import (
    detect_format,
    instruction_text,
    make_row_formatter,
    response_text,
    text_of,
    tokenize_prompt_completion,
)
from . import schema
from .config import PaserConfig

CUSTOM_FORMAT = "custom"


def resolve_format(dataset: Dataset, config: PaserConfig, formatting_func: Optional[Callable] = None) -> str:
    """``"custom"`` with a `formatting_func`, else `config.dataset_format` or the format the columns show."""
    return CUSTOM_FORMAT if formatting_func is not None else detect_format(dataset.column_names, config.dataset_format)


def prepare_dataset(
    dataset: Dataset,
    tokenizer,
    config: PaserConfig,
    dataset_format: str,
    chat: bool,
    formatting_func: Optional[Callable[[dict], dict]] = None,
    desc: str = "PASER: formatting and tokenising",
) -> Dataset:
    """One row per input row: its index, the text to embed (instruction, plus the response with
    `embed_response`), the text concepts come from (`concept_source`), the token ids truncated to `max_length`,
    where the response starts, the length, response tokens, whether it was truncated and whether the response
    is empty. Cached (`cached_map`) under ``prepare``."""
    formatter = make_row_formatter(dataset_format, chat, formatting_func)
    custom = formatting_func is not None
    embed_output = config.embed_response
    concept_output = config.concept_source == "instruction_output"
    columns = (schema.INDEX, schema.TEXT, schema.CONCEPT_TEXT, schema.INPUT_IDS, schema.RESPONSE_START,
               schema.LENGTH, schema.RESPONSE_TOKENS, schema.TRUNCATED, schema.EMPTY)

    def prepare(batch, indices):
        out = {column: [] for column in columns}
        for index, values in zip(indices, zip(*batch.values())):
            row = dict(zip(batch, values))
            pc = formatter(row)
            if custom:
                instr, resp = text_of(pc["prompt"]), text_of(pc["completion"])
            else:
                instr, resp = instruction_text(row, dataset_format), response_text(row, dataset_format)
            tokens = tokenize_prompt_completion(pc["prompt"], pc["completion"], tokenizer, config.max_length)
            out[schema.INDEX].append(index)
            out[schema.TEXT].append(f"{instr}\n{resp}" if embed_output else instr)
            out[schema.CONCEPT_TEXT].append(f"{instr}\n{resp}" if concept_output else instr)
            out[schema.INPUT_IDS].append(tokens["input_ids"])
            out[schema.RESPONSE_START].append(tokens["response_start"])
            out[schema.LENGTH].append(len(tokens["input_ids"]))
            out[schema.RESPONSE_TOKENS].append(tokens["num_response_tokens"])
            out[schema.TRUNCATED].append(tokens["truncated"])
            out[schema.EMPTY].append(not resp.strip())
        return out

    fingerprint = combine(
        "prepare-v1",
        dataset._fingerprint,
        Hasher.hash(tokenizer),
        Hasher.hash(formatting_func) if custom else None,
        dataset_format,
        chat,
        config.max_length,
        config.concept_source,
        config.embed_response,
    )
    return cached_map(
        dataset,
        prepare,
        "prepare",
        fingerprint,
        config.cache_dir,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        desc=desc,
    )


@dataclass(frozen=True)
class PreparedRows:
    """The per-row numbers of a prepared dataset, as arrays.

    `empty`: the response text is blank, or it has no token although nothing was truncated; `cut_away`: the
    response was not empty but truncation to `max_length` left none of it.
    """

    lengths: np.ndarray
    response_starts: np.ndarray
    response_tokens: np.ndarray
    truncated: np.ndarray
    empty: np.ndarray

    @classmethod
    def of(cls, prepared: Dataset) -> PreparedRows:
        response_tokens = np.asarray(prepared[schema.RESPONSE_TOKENS], dtype=np.int64)
        truncated = np.asarray(prepared[schema.TRUNCATED], dtype=bool)
        return cls(
            lengths=np.asarray(prepared[schema.LENGTH], dtype=np.int64),
            response_starts=np.asarray(prepared[schema.RESPONSE_START], dtype=np.int64),
            response_tokens=response_tokens,
            truncated=truncated,
            empty=np.asarray(prepared[schema.EMPTY], dtype=bool) | (response_tokens == 0) & ~truncated,
        )

    @property
    def cut_away(self) -> np.ndarray:
        return ~self.empty & (self.response_tokens == 0)


def truncation_warning(num_truncated: int, max_length: int) -> Optional[str]:
    """The warning for rows truncated to `max_length` tokens, or None when there were none."""
    if not num_truncated:
        return None
    return (
        f"{num_truncated} rows were longer than max_length={max_length} tokens and were truncated for scoring (as "
        "the trainer truncates them)."
    )
