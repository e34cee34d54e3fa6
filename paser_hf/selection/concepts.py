"""Negative transfer mitigation (spec 3, paper §3.4): RAKE concepts and the concept consistency graph."""

from __future__ import annotations

import re
from collections.abc import Iterable

import networkx as nx
from rake_nltk import Rake
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

_BREAK = "."
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS | {"etc", "let", "via"})
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
    """Words of lower-cased `sentence`; every other token becomes a phrase break, so code symbols never join a phrase."""
    return [word or _BREAK for word in _TOKENS.findall(sentence)]


class ConceptExtractor:
    """Concepts of a text: RAKE key phrases (rake-nltk, as in paper App. K), spec 3.

    Lower-cased phrases of `min_words`..`max_words` words, highest RAKE score first (ties: reverse
    alphabetical, as rake-nltk sorts), duplicates dropped, at most `max_concepts`. Stop-words are
    scikit-learn's English list and the tokenisers are regexes, so no NLTK data is needed. Numbers,
    single letters and punctuation break phrases. Deterministic; pickles as its settings and rules.
    """

    def __init__(self, max_concepts: int = 10, min_words: int = 1, max_words: int = 4):
        for name, value in (("max_concepts", max_concepts), ("min_words", min_words), ("max_words", max_words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; it must be an integer >= 1.")
        if max_words < min_words:
            raise ValueError(f"max_words={max_words} is below min_words={min_words}.")
        self.max_concepts = max_concepts
        self.min_words = min_words
        self.max_words = max_words
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
        """The extractor a `PaserConfig` describes (max_concepts, min/max_concept_words)."""
        return cls(config.max_concepts, config.min_concept_words, config.max_concept_words)

    def __call__(self, text: str | None) -> list[str]:
        if not text:
            return []
        self._rake.extract_keywords_from_text(text.lower())
        return list(dict.fromkeys(self._rake.get_ranked_phrases()))[: self.max_concepts]

    def batch(self, texts: Iterable[str | None]) -> list[list[str]]:
        """Concepts of each text, e.g. inside `datasets.Dataset.map(batched=True)`."""
        return [self(text) for text in texts]

    def __reduce__(self):
        return type(self), (self.max_concepts, self.min_words, self.max_words), _RULES

    def __setstate__(self, rules):
        """Nothing to restore: the rules ride in the pickle so a cache fingerprint changes with them."""

    def __repr__(self) -> str:
        return f"ConceptExtractor(max_concepts={self.max_concepts}, min_words={self.min_words}, max_words={self.max_words})"


class ConceptGraph:
    """Concept consistency graph G = (V, E) and IsConsistent (spec 3, paper §3.4, Algorithm 1).

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
