"""Concepts and the concept consistency graph (spec 3; paper §3.4 and Appendix J)."""

import os
import pickle
import random
import subprocess
import sys
from itertools import combinations

import networkx as nx
import nltk
import pytest
from rake_nltk import Rake

from paser_hf.selection.concepts import ConceptExtractor, ConceptGraph, tokenize_words
from paser_hf.selection.config import PaserConfig

FIB = "Write a Python function to compute the nth Fibonacci number: def fib(n): a, b = 0, 1"

# Appendix J.1: the three accepted samples that make the initial graph.
QUANTUM = ["quantum computing", "qubit", "superposition", "entanglement"]
CLASSICAL = ["cpu", "ram", "hard drive", "binary logic"]
DEEP = ["deep learning", "neural network", "backpropagation", "optimization"]
# Appendix J.2: the two new samples.
QUBITS = [
    "qubit",
    "quantum computer",
    "computational power",
    "quantum states",
    "error correction",
    "quantum parallelism",
    "coherence",
]
SPEEDUP = ["quantum computing", "deep learning", "neural network", "speedup"]


def initial_graph():
    graph = ConceptGraph()
    assert [graph.try_add(c) for c in (QUANTUM, CLASSICAL, DEEP)] == [True, True, True]
    return graph


def test_appendix_j_case_study():
    """Appendix J: sample 1 is accepted, sample 2 rejected, against the graph of three accepted samples.

    The initial graph (J.1) holds three accepted samples (quantum, classical computer, deep learning):
    12 vertices and three 4-cliques (18 edges), and nothing joins the domains. Sample 1 (J.2.1) shares
    only `qubit` with V ('quantum computer' is not 'quantum computing'), so no pair has both concepts
    in V and IsConsistent is True. Sample 2 (J.2.2) has `quantum computing` and `deep learning` /
    `neural network` in V with no edge between the domains: rejected, and exactly those two pairs are
    the conflicts (`deep learning`-`neural network` is an edge, `speedup` is new). The quantum sample
    alone would not reject sample 2: the rejection needs the deep-learning sample of J.1 in G.
    """
    graph = initial_graph()
    assert (graph.num_nodes, graph.num_edges) == (12, 18)
    assert graph.conflicts(QUBITS) == []
    assert graph.try_add(QUBITS)
    assert (graph.num_nodes, graph.num_edges) == (18, 18 + 21)
    assert graph.conflicts(SPEEDUP) == [("quantum computing", "deep learning"), ("quantum computing", "neural network")]
    assert not graph.try_add(SPEEDUP)
    assert (graph.num_nodes, graph.num_edges) == (18, 39)
    assert not initial_graph().is_consistent(SPEEDUP)

    quantum_only = ConceptGraph()
    quantum_only.add(QUANTUM)
    assert quantum_only.is_consistent(SPEEDUP)


def two_cliques():
    graph = ConceptGraph()
    graph.add(["a", "b", "c"])
    graph.add(["x", "y"])
    return graph


def test_graph_add_builds_cliques():
    graph = two_cliques()
    assert (graph.num_nodes, graph.num_edges) == (5, 4)
    graph.add(["solo"])
    graph.add([])
    assert (graph.num_nodes, graph.num_edges) == (6, 4)
    graph.add(["a", "a", "b"])
    assert graph.num_edges == 4
    assert "solo" in graph and "zzz" not in graph


def test_graph_consistent_and_inconsistent():
    graph = two_cliques()
    assert graph.is_consistent(["a", "b", "c"])
    assert graph.is_consistent(["c", "a", "new"])
    assert not graph.is_consistent(["a", "x"])
    assert graph.conflicts(["a", "x", "b", "new"]) == [("a", "x"), ("x", "b")]
    assert graph.conflicts(["a", "b"]) == []


def test_graph_new_single_empty_and_duplicates():
    graph = two_cliques()
    assert graph.is_consistent(["new", "other", "third"])
    assert graph.is_consistent(["a"])
    assert graph.is_consistent([])
    assert graph.is_consistent(["x", "x"])
    assert ConceptGraph().is_consistent(["p", "q"])


def test_try_add_verdicts_and_no_change_on_reject():
    graph = two_cliques()
    assert not graph.try_add(["b", "y", "fresh"])
    assert (graph.num_nodes, graph.num_edges) == (5, 4)
    assert "fresh" not in graph
    assert graph.try_add(iter(["a", "fresh"]))
    assert (graph.num_nodes, graph.num_edges) == (6, 5)
    assert graph.try_add(["fresh", "b"]) is False


def test_graph_matches_networkx_reference():
    """The verdicts equal a direct reading of IsConsistent on a networkx graph, over random samples."""
    rng = random.Random(0)
    graph = ConceptGraph()
    verdicts, reference = [], []
    ref = nx.Graph()
    for _ in range(400):
        concepts = [f"c{rng.randint(0, 60)}" for _ in range(rng.randint(0, 5))]
        verdicts.append(graph.try_add(concepts))
        ok = all(ref.has_edge(u, v) for u, v in combinations(set(concepts), 2) if u in ref and v in ref)
        if ok:
            ref.add_nodes_from(concepts)
            ref.add_edges_from((u, v) for u, v in combinations(set(concepts), 2))
        reference.append(ok)
    assert verdicts == reference
    assert 0 < sum(verdicts) < len(verdicts)
    exported = graph.to_networkx()
    assert set(exported.nodes) == set(ref.nodes)
    assert {frozenset(e) for e in exported.edges} == {frozenset(e) for e in ref.edges}


def test_extractor_phrases_ranked_and_clean():
    extractor = ConceptExtractor()
    assert extractor(FIB) == ["nth fibonacci number", "python function", "def fib", "write", "compute"]
    assert extractor("Explain the basic principles of quantum computing.") == [
        "quantum computing",
        "basic principles",
        "explain",
    ]
    assert extractor("Don't forget the user's manual.") == ["user manual", "forget"]
    assert extractor("QUANTUM Computing. Quantum computing!") == ["quantum computing"]
    assert extractor("") == [] and extractor(None) == [] and extractor("It is of the. 42 = x") == []


def test_extractor_limits():
    assert ConceptExtractor(max_concepts=2)(FIB) == ["nth fibonacci number", "python function"]
    assert ConceptExtractor(min_words=2)(FIB) == ["nth fibonacci number", "python function", "def fib"]
    assert ConceptExtractor(max_words=2)(FIB) == ["python function", "def fib", "write", "compute"]
    assert ConceptExtractor(min_words=3, max_words=3)(FIB) == ["nth fibonacci number"]
    with pytest.raises(ValueError):
        ConceptExtractor(min_words=3, max_words=2)
    with pytest.raises(ValueError):
        ConceptExtractor(max_concepts=0)


def test_tokenizer_turns_code_symbols_into_breaks():
    words = tokenize_words("a, b = 0; x_1 += fib(n) 3d users' it’s")
    assert " ".join(words) == ". . . . . . . . . . fib . . . 3d users . it"


def test_from_config_batch_and_determinism():
    extractor = ConceptExtractor.from_config(PaserConfig(max_concepts=3, min_concept_words=1, max_concept_words=2))
    assert (extractor.max_concepts, extractor.min_words, extractor.max_words) == (3, 1, 2)
    texts = [FIB, "", "Describe the main components of a classical computer."]
    first = extractor.batch(texts)
    assert first == extractor.batch(texts) == ConceptExtractor(3, 1, 2).batch(texts)
    assert first[0] == ["python function", "def fib", "write"] and first[1] == []


def test_extractor_pickles_after_use():
    extractor = ConceptExtractor(max_concepts=4)
    expected = extractor(FIB)
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone(FIB) == expected
    assert pickle.dumps(extractor) == pickle.dumps(ConceptExtractor(max_concepts=4))


def test_no_nltk_data_needed(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("NLTK data was requested")

    monkeypatch.setattr(nltk.data, "find", refuse)
    monkeypatch.setattr(nltk.data, "load", refuse)
    monkeypatch.setattr(nltk, "download", refuse)
    with pytest.raises(AssertionError):
        Rake()
    assert ConceptExtractor()("Sentence one. Sentence two!\nA third line?") == ["sentence", "line"]


def test_no_nltk_data_in_fresh_process(tmp_path):
    code = "from paser_hf.selection.concepts import ConceptExtractor; print(ConceptExtractor()('Quantum computing. Qubits!'))"
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['quantum computing', 'qubits']"
