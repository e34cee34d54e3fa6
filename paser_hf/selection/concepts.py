"""Negative transfer mitigation (paper §3.4, App. J): RAKE concepts, their similarity merge, and the concept
consistency graph."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import networkx as nx
import numpy as np
from rake_nltk import Rake
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

_BREAK = "."
# scikit-learn's list has "do", "has" and "should" but not these forms of the auxiliaries.
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS | {"etc", "let", "via", "does", "did", "doing", "having", "shall"})
# Words that frame the task rather than carry knowledge: a phrase made only of them ("following sentence",
# "given number", "python function", "basic principles") is not a concept. No part-of-speech tagger is
# used: none on PyPI ships an English model without a run-time download.
TASK_WORDS = frozenset(
    # the prompt and its parts
    "following given above below provided specified mentioned input output instruction instructions task tasks "
    "question questions answer answers response responses prompt example examples sample samples expected result "
    "results "
    # units of text that the task reads or writes
    "text texts sentence sentences paragraph paragraphs passage passages word words phrase phrases statement "
    "statements article articles essay essays story stories poem poems summary title titles description "
    "descriptions list lists item items line lines character characters string strings topic topics data "
    "information "
    # units of code that the task reads or writes, and the programming language it is written in
    "code codes program programs function functions method methods script scripts snippet snippets class classes "
    "query queries file files python java javascript typescript php ruby sql bash shell html css "
    # quantities as objects of the task
    "number numbers integer integers value values array arrays digit digits element elements total amount "
    # generic nouns naming the shape of the answer
    "way ways type types kind kinds step steps tip tips idea ideas reason reasons aspect aspects feature features "
    "factor factors benefit benefits advantage advantages disadvantage disadvantages difference differences concept "
    "concepts principle principles component components part parts detail details point points thing things "
    # modifiers that point at the prompt or rate the answer
    "new different various certain specific particular several multiple single simple short brief main basic "
    "fundamental key important common possible best good appropriate suitable correct creative "
    # request verbs and verbs describing the answer's input and output
    "write create generate explain describe give make provide compose construct design develop implement produce "
    "suggest find identify determine name rewrite edit use using used based return returns print prints take takes "
    "contain contains containing".split()
)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_TOKENS = re.compile(
    r"(?=\d*[^\W\d_])([^\W_]{2,})(?:['’]s)?(?![^\W_]|['’][^\W_])"  # a word (>= 2 chars, a letter), 's dropped
    r"|[^\W_]+(?:['’][^\W_]+)*"  # a number, a single letter or a contraction: a break
    r"|[^\w\s]+|_+"  # punctuation and code symbols: a break
)
_RULES = (_SENTENCES.pattern, _TOKENS.pattern, tuple(sorted(STOP_WORDS)))


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: breaks after ., ! or ? followed by space, and at line ends (no NLTK punkt)."""
    return [sentence for sentence in _SENTENCES.split(text) if sentence]


def tokenize_words(sentence: str) -> list[str]:
    """Words of lower-cased `sentence`; other tokens become phrase breaks, so code symbols never join a phrase."""
    return [word or _BREAK for word in _TOKENS.findall(sentence)]


def is_task_phrase(phrase: str, task_words: frozenset = TASK_WORDS) -> bool:
    """True when every word of `phrase` is a task word: it names the task's form, not knowledge."""
    return all(word in task_words for word in phrase.split())


class ConceptExtractor:
    """Concepts of a text: RAKE key phrases (rake-nltk, as in paper App. K).

    Lower-cased phrases of `min_words`..`max_words` words (the authors: 2 to 4), highest RAKE score first
    (ties: reverse alphabetical, as rake-nltk sorts), duplicates and phrases made only of `task_words`
    dropped, at most `max_concepts` (the authors: 10). Stop-words are scikit-learn's English list and the
    tokenisers are regexes, so no NLTK data is needed. Numbers, single letters and punctuation break
    phrases. Deterministic; pickles as its settings and rules, so its hash keys a concepts cache.
    """

    def __init__(
        self, max_concepts: int = 10, min_words: int = 2, max_words: int = 4, task_words: Iterable[str] = TASK_WORDS
    ):
        for name, value in (("max_concepts", max_concepts), ("min_words", min_words), ("max_words", max_words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; it must be an integer >= 1.")
        if max_words < min_words:
            raise ValueError(f"max_words={max_words} is below min_words={min_words}.")
        if isinstance(task_words, str):
            raise ValueError("task_words is one string; give a collection of words, e.g. {'sentence', 'text'}.")
        self.max_concepts = max_concepts
        self.min_words = min_words
        self.max_words = max_words
        self.task_words = frozenset(task_words)
        self._rake = Rake(
            stopwords=STOP_WORDS,
            punctuations={_BREAK},
            min_length=min_words,
            max_length=max_words,
            sentence_tokenizer=split_sentences,
            word_tokenizer=tokenize_words,
        )

    @classmethod
    def from_config(cls, config) -> ConceptExtractor:
        """The extractor a `PaserConfig` describes (max_concepts, min/max_concept_words), with `TASK_WORDS`."""
        return cls(config.max_concepts, config.min_concept_words, config.max_concept_words)

    def __call__(self, text: str | None) -> list[str]:
        if not text:
            return []
        self._rake.extract_keywords_from_text(text.lower())
        phrases = dict.fromkeys(self._rake.get_ranked_phrases())
        return [p for p in phrases if not is_task_phrase(p, self.task_words)][: self.max_concepts]

    def batch(self, texts: Iterable[str | None]) -> list[list[str]]:
        """Concepts of each text, e.g. inside `datasets.Dataset.map(batched=True)`."""
        return [self(text) for text in texts]

    def __reduce__(self):
        settings = (self.max_concepts, self.min_words, self.max_words, tuple(sorted(self.task_words)))
        return type(self), settings, _RULES

    def __setstate__(self, rules):
        """Nothing to restore: the rules ride in the pickle so a cache fingerprint changes with them."""

    def __repr__(self) -> str:
        return (
            f"ConceptExtractor(max_concepts={self.max_concepts}, min_words={self.min_words}, "
            f"max_words={self.max_words}, task_words=<{len(self.task_words)} words>)"
        )


def leader_ids(vectors: np.ndarray, threshold: float, block: int = 512) -> np.ndarray:
    """Greedy leader clustering of rows of `vectors`, in row order: row i joins the earlier leader j of
    highest cos(v_i, v_j) when that is >= `threshold` (ties: the first leader), else leads a group.

    Returns each row's leader index (a leader is its own). Every member is within `threshold` of its
    leader; nothing else is merged. Rows are L2-normalised here; one (block x leaders) product per
    block keeps the cost O(n * leaders * dim) with one nearest-leader look-up per row.
    """
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"vectors have shape {v.shape}; give one row per phrase, shape (n, dim).")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r}; a cosine threshold lies in [-1, 1].")
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    n = len(v)
    out = np.empty(n, dtype=np.int64)
    leaders = np.empty((n, v.shape[1]), dtype=np.float32)
    leader_rows: list[int] = []
    for start in range(0, n, block):
        chunk = v[start : start + block]
        before = len(leader_rows)
        sims_old = chunk @ leaders[:before].T if before else np.empty((len(chunk), 0), np.float32)
        sims_in = chunk @ chunk.T
        new: list[int] = []  # positions in chunk of the leaders made in this block
        for i in range(len(chunk)):
            best_sim, best = -np.inf, -1
            if before:
                j = int(np.argmax(sims_old[i]))
                best_sim, best = sims_old[i, j], leader_rows[j]
            if new:
                k = int(np.argmax(sims_in[i, new]))
                if sims_in[i, new[k]] > best_sim:
                    best_sim, best = sims_in[i, new[k]], start + new[k]
            if best >= 0 and best_sim >= threshold:
                out[start + i] = best
            else:
                out[start + i] = start + i
                leaders[len(leader_rows)] = chunk[i]
                leader_rows.append(start + i)
                new.append(i)
    return out


def merge_similar_concepts(
    concepts: Sequence[Sequence[str]], embedder, threshold: float, batch_size: int = 64
) -> list[list[str]]:
    """Concept lists with near-duplicate phrases renamed to one canonical phrase (the authors' concept
    similarity threshold, 0.75): each distinct phrase, in first-seen order, is embedded once with
    `embedder.encode` (a SentenceTransformer) and joins its leader by `leader_ids`; a row's renamed
    list keeps its order, duplicates dropped. The graph and Algorithm 1 then see canonical phrases.
    """
    phrases = list(dict.fromkeys(p for row in concepts for p in row))
    if not phrases:
        return [[] for _ in concepts]
    vectors = embedder.encode(
        phrases, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    lead = leader_ids(np.asarray(vectors), threshold)
    canonical = {p: phrases[j] for p, j in zip(phrases, lead.tolist())}
    return [list(dict.fromkeys(canonical[p] for p in row)) for row in concepts]


class ConceptGraph:
    """Concept consistency graph G = (V, E) and IsConsistent (paper §3.4, Definition 1, Algorithm 1).

    Vertices are concepts; an edge joins two concepts that co-occur in an accepted sample. Lean
    backend: concepts are interned to ints and each edge is one packed int (low id << 32 | high id)
    in a set, so a check costs at most c(c-1)/2 set look-ups and never scans the graph. Chosen by
    measurement (benchmarks/concept_graph_scale.py, 1M synthetic rows, CPU seconds): through
    `try_add` 3.8 s and 27 MB against 5.1 s and 56 MB for a `networkx.Graph`; accepting every row
    (18.2M edges) 23 s and 1.1 GB (63 B/edge) against 55 s and 2.2 GB. `to_networkx()` gives a
    networkx copy for analysis and plots.
    """

    def __init__(self):
        self._ids: dict[str, int] = {}
        self._edges: set[int] = set()

    @property
    def num_nodes(self) -> int:
        return len(self._ids)

    @property
    def num_edges(self) -> int:
        return len(self._edges)

    def __contains__(self, concept: str) -> bool:
        return concept in self._ids

    @staticmethod
    def _key(a: int, b: int) -> int:
        return (a << 32) | b if a < b else (b << 32) | a

    def _known(self, concepts: Iterable[str]) -> list[tuple[str, int]]:
        ids = self._ids
        return [(c, ids[c]) for c in dict.fromkeys(concepts) if c in ids]

    def is_consistent(self, concepts: Iterable[str]) -> bool:
        """IsConsistent(C, G): every pair of distinct concepts of C that are both vertices is an edge."""
        known = [i for _, i in self._known(concepts)]
        edges, key = self._edges, self._key
        for n, a in enumerate(known):
            for b in known[n + 1 :]:
                if key(a, b) not in edges:
                    return False
        return True

    def conflicts(self, concepts: Iterable[str]) -> list[tuple[str, str]]:
        """The pairs that make C inconsistent: both concepts are vertices and no edge joins them."""
        known = self._known(concepts)
        edges, key = self._edges, self._key
        return [(u, v) for n, (u, a) in enumerate(known) for v, b in known[n + 1 :] if key(a, b) not in edges]

    def add(self, concepts: Iterable[str]) -> None:
        """Add the concepts as vertices and every pair of distinct ones as an edge."""
        ids = self._ids
        new = [ids.setdefault(c, len(ids)) for c in dict.fromkeys(concepts)]
        key = self._key
        self._edges.update(key(a, b) for n, a in enumerate(new) for b in new[n + 1 :])

    def try_add(self, concepts: Iterable[str]) -> bool:
        """Accept the sample (add its concepts) when it is consistent; return the verdict."""
        concepts = list(concepts)
        if not self.is_consistent(concepts):
            return False
        self.add(concepts)
        return True

    def to_networkx(self) -> nx.Graph:
        """A `networkx.Graph` copy with the concepts as nodes, for analysis and plots."""
        names = list(self._ids)
        graph = nx.Graph()
        graph.add_nodes_from(names)
        mask = (1 << 32) - 1
        graph.add_edges_from((names[k >> 32], names[k & mask]) for k in self._edges)
        return graph
