"""Concepts, their similarity merge and the concept consistency graph (paper §3.4 and Appendix J)."""

import os
import pickle
import random
import subprocess
import sys
from itertools import combinations

import networkx as nx
import nltk
import numpy as np
import pytest
from rake_nltk import Rake

from paser_hf.selection.concepts import (
    TASK_WORDS,
    ConceptExtractor,
    ConceptGraph,
    is_task_phrase,
    leader_ids,
    merge_similar_concepts,
    tokenize_words,
)
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
    """RAKE ranking and clean phrases, seen with the filters off (1-word phrases, no task words)."""
    extractor = ConceptExtractor(min_words=1, task_words=())
    assert extractor(FIB) == ["nth fibonacci number", "python function", "def fib", "write", "compute"]
    assert extractor("Explain the basic principles of quantum computing.") == [
        "quantum computing",
        "basic principles",
        "explain",
    ]
    assert extractor("Don't forget the user's manual.") == ["user manual", "forget"]
    assert extractor("QUANTUM Computing. Quantum computing!") == ["quantum computing"]
    assert extractor("") == [] and extractor(None) == [] and extractor("It is of the. 42 = x") == []
    assert extractor("How much money does she have? What did he buy?") == ["money", "buy"]


def test_extractor_authors_defaults():
    """The authors' settings (reviews, answer A2): 2-4 word phrases, at most 10; task phrases dropped."""
    extractor = ConceptExtractor()
    assert (extractor.max_concepts, extractor.min_words, extractor.max_words) == (10, 2, 4)
    assert extractor.task_words == TASK_WORDS
    assert extractor(FIB) == ["nth fibonacci number", "def fib"]
    assert extractor("Don't forget the user's manual.") == ["user manual"]
    assert extractor("Rewrite the following sentence in passive voice.") == ["passive voice"]
    many = ". ".join(f"alpha{i} beta{i}" for i in range(12))
    assert len(extractor(many)) == 10
    config = PaserConfig()
    assert (config.max_concepts, config.min_concept_words, config.max_concept_words) == (10, 2, 4)
    assert config.concept_source == "instruction" and config.concept_similarity is None


# Appendix J: the instructions of the three J.1 samples, then J.2.1 (accepted) and J.2.2 (rejected).
J_INSTRUCTIONS = [
    "Explain the basic principles of quantum computing.",
    "Describe the main components of a classical computer.",
    "What are the fundamental concepts in deep learning?",
    "How does increasing the number of qubits affect a quantum computer’s performance?",
    "Explain how quantum computing can be used to significantly speed up deep learning algorithms.",
]
J_OUTPUT_3 = (
    "Deep learning is a subset of machine learning based on artificial neural networks. Key concepts include: "
    "neural networks with multiple layers (deep neural networks), which can learn hierarchical representations "
    "of data; backpropagation, an algorithm for training these networks by adjusting weights; and various "
    "optimization techniques to improve learning."
)


def test_extractor_appendix_j_multiword_concepts():
    """From the instruction alone the App. J domains come out as the paper's multi-word concepts, and the
    task framing ("basic principles", "main components", "fundamental concepts") is dropped."""
    extractor = ConceptExtractor()
    got = extractor.batch(J_INSTRUCTIONS)
    assert got[:3] == [["quantum computing"], ["classical computer"], ["deep learning"]]
    assert got[3] == ["quantum computer performance", "qubits affect"]
    assert got[4] == ["deep learning algorithms", "significantly speed", "quantum computing"]
    with_output = extractor(f"{J_INSTRUCTIONS[2]}\n{J_OUTPUT_3}")
    domain = {"deep learning", "neural networks", "deep neural networks", "artificial neural networks"}
    assert domain <= set(with_output)
    assert "key concepts include" in with_output and "fundamental concepts" not in with_output


@pytest.mark.parametrize(
    "phrase",
    ["following sentence", "given number", "python function", "basic principles", "write python code",
     "main components", "given list", "sql query", "short story", "new way"],
)
def test_task_phrases_are_dropped(phrase):
    assert is_task_phrase(phrase)
    assert ConceptExtractor()(f"{phrase}. quantum computing") == ["quantum computing"]


@pytest.mark.parametrize(
    "phrase",
    ["quantum computing", "nth fibonacci number", "list comprehension", "csv file", "binary search tree",
     "persuasive essay", "recursive function", "given number using recursion", "passive voice"],
)
def test_content_phrases_are_kept(phrase):
    """A phrase with at least one word outside TASK_WORDS is a concept, task words and all."""
    assert not is_task_phrase(phrase)
    assert ConceptExtractor()(phrase) == [phrase]


def test_extractor_limits():
    plain = {"task_words": ()}
    assert ConceptExtractor(max_concepts=2, min_words=1, **plain)(FIB) == ["nth fibonacci number", "python function"]
    assert ConceptExtractor(min_words=2, **plain)(FIB) == ["nth fibonacci number", "python function", "def fib"]
    two = ConceptExtractor(min_words=1, max_words=2, **plain)
    assert two(FIB) == ["python function", "def fib", "write", "compute"]
    assert ConceptExtractor(min_words=3, max_words=3)(FIB) == ["nth fibonacci number"]
    assert ConceptExtractor(task_words={"fib", "def"})(FIB) == ["nth fibonacci number", "python function"]
    with pytest.raises(ValueError):
        ConceptExtractor(min_words=3, max_words=2)
    with pytest.raises(ValueError):
        ConceptExtractor(max_concepts=0)
    with pytest.raises(ValueError, match="collection of words"):
        ConceptExtractor(task_words="sentence")


def test_tokenizer_turns_code_symbols_into_breaks():
    words = tokenize_words("a, b = 0; x_1 += fib(n) 3d users' it’s")
    assert " ".join(words) == ". . . . . . . . . . fib . . . 3d users . it"


def test_from_config_batch_and_determinism():
    extractor = ConceptExtractor.from_config(PaserConfig(max_concepts=3, min_concept_words=1, max_concept_words=2))
    assert (extractor.max_concepts, extractor.min_words, extractor.max_words) == (3, 1, 2)
    texts = [FIB, "", "Describe the main components of a classical computer."]
    first = extractor.batch(texts)
    assert first == extractor.batch(texts) == ConceptExtractor(3, 1, 2).batch(texts)
    assert first == [["def fib", "compute"], [], ["classical computer"]]


def test_extractor_pickles_after_use():
    extractor = ConceptExtractor(max_concepts=4)
    expected = extractor(FIB)
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone(FIB) == expected
    assert pickle.dumps(extractor) == pickle.dumps(ConceptExtractor(max_concepts=4))
    assert pickle.dumps(extractor) != pickle.dumps(ConceptExtractor(max_concepts=4, task_words=()))


def test_no_nltk_data_needed(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("NLTK data was requested")

    monkeypatch.setattr(nltk.data, "find", refuse)
    monkeypatch.setattr(nltk.data, "load", refuse)
    monkeypatch.setattr(nltk, "download", refuse)
    with pytest.raises(AssertionError):
        Rake()
    text = "Quantum computing. Deep learning!\nA third line?"
    assert ConceptExtractor()(text) == ["quantum computing", "deep learning"]


def test_no_nltk_data_in_fresh_process(tmp_path):
    """A fresh process needs no NLTK data, and the extractor's pickle (datasets' Hasher key of the concepts
    cache) does not depend on its string-hash seed."""
    code = (
        "import pickle; from paser_hf.selection.concepts import ConceptExtractor; "
        "print(ConceptExtractor()('Quantum computing. Qubits!')); print(pickle.dumps(ConceptExtractor()).hex())"
    )
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path), "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['quantum", "computing']", pickle.dumps(ConceptExtractor()).hex()]


class TableEmbedder:
    """A stand-in sentence embedder: each phrase is a unit vector at a fixed angle (degrees) in the plane."""

    def __init__(self, angles):
        self.angles = angles
        self.calls = []

    def encode(self, phrases, **kwargs):
        self.calls.append(list(phrases))
        rad = np.radians([self.angles[p] for p in phrases])
        return np.stack([np.cos(rad), np.sin(rad)], axis=1)


# cos(0, 10 deg) = 0.98 and cos(120, 125 deg) = 0.996: near-duplicates; every other pair is at most cos 60 deg = 0.5.
ANGLES = {"neural network": 0, "neural networks": 10, "deep learning": 60, "graph theory": 120, "graph theories": 125,
          "quantum computing": 200}


def test_merge_similar_concepts_merges_near_duplicates_and_nothing_else():
    rows = [["neural networks", "deep learning"], ["neural network", "graph theory"],
            ["neural network", "neural networks"], [], ["graph theories", "quantum computing"]]
    embedder = TableEmbedder(ANGLES)
    merged = merge_similar_concepts(rows, embedder, 0.75)
    assert merged == [["neural networks", "deep learning"], ["neural networks", "graph theory"], ["neural networks"],
                      [], ["graph theory", "quantum computing"]]
    assert embedder.calls == [["neural networks", "deep learning", "neural network", "graph theory", "graph theories",
                               "quantum computing"]]
    assert merge_similar_concepts(rows, TableEmbedder(ANGLES), 0.999) == rows
    assert merge_similar_concepts(rows, TableEmbedder(ANGLES), 0.45) == [
        ["neural networks"], ["neural networks", "graph theory"], ["neural networks"], [],
        ["graph theory", "quantum computing"]]
    assert merge_similar_concepts([[], []], TableEmbedder(ANGLES), 0.75) == [[], []]


def test_merged_concepts_are_one_vertex():
    """After the merge a near-duplicate of a vertex is that vertex, so it can conflict: "neural networks" with
    "quantum computing" is rejected once "neural network" and "quantum computing" are unjoined vertices."""
    rows = [
        ["neural network", "deep learning"],
        ["quantum computing", "graph theory"],
        ["neural networks", "quantum computing"],
    ]
    exact = ConceptGraph()
    assert [exact.try_add(r) for r in rows] == [True, True, True]
    similar = ConceptGraph()
    merged = merge_similar_concepts(rows, TableEmbedder(ANGLES), 0.75)
    assert [similar.try_add(r) for r in merged] == [True, True, False]


def planar(*degrees):
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_leader_ids_greedy_in_order():
    assert leader_ids(planar(0, 10, 60), 0.75).tolist() == [0, 0, 2]
    # no chaining: 35 deg joins 0 deg, 70 deg is 0.82 from 35 deg but 35 deg is no leader and 0 deg is 0.34 away
    assert leader_ids(planar(0, 35, 70), 0.75).tolist() == [0, 0, 2]
    # the nearest leader wins, not the first: 45 deg is 0.71 from 0 deg and 0.82 from 80 deg
    assert leader_ids(planar(0, 80, 45), 0.7).tolist() == [0, 1, 1]
    # lengths do not matter: the vectors are normalised
    assert leader_ids(planar(0, 10) * [[3.0], [0.1]], 0.9).tolist() == [0, 0]
    assert leader_ids(np.zeros((0, 4)), 0.75).tolist() == []
    with pytest.raises(ValueError, match="shape"):
        leader_ids(np.ones(3), 0.75)
    with pytest.raises(ValueError, match="threshold"):
        leader_ids(planar(0), 1.5)


def test_leader_ids_blocks_match_a_direct_reading():
    vectors = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    leaders, expected = [], []
    for i, v in enumerate(unit):
        sims = [float(unit[j] @ v) for j in leaders]
        best = int(np.argmax(sims)) if sims else -1
        if sims and sims[best] >= 0.5:
            expected.append(leaders[best])
        else:
            leaders.append(i)
            expected.append(i)
    assert 10 < len(leaders) < 290
    for block in (1, 7, 512):
        assert leader_ids(vectors, 0.5, block=block).tolist() == expected


def test_config_concept_similarity():
    assert PaserConfig(concept_similarity=0.75).concept_similarity == 0.75
    assert PaserConfig(concept_similarity=1.0).concept_similarity == 1.0
    for bad in (0, -0.5, 1.5, True):
        with pytest.raises(ValueError, match="concept_similarity"):
            PaserConfig(concept_similarity=bad)


@pytest.mark.slow
def test_minilm_similarity_reproduces_appendix_j():
    """With all-MiniLM-L6-v2 at the authors' 0.75, instruction-only concepts give App. J's verdicts: sample 2's
    "deep learning algorithms" is the vertex "deep learning" (exact matching accepts sample 2)."""
    from paser_hf.selection.embedding import load_embedder

    concepts = ConceptExtractor().batch(J_INSTRUCTIONS)
    exact = ConceptGraph()
    assert [exact.try_add(c) for c in concepts] == [True] * 5
    embedder = load_embedder(device="cpu")
    merged = merge_similar_concepts(concepts, embedder, 0.75)
    assert merged[4] == ["deep learning", "significantly speed", "quantum computing"]
    graph = ConceptGraph()
    assert [graph.try_add(c) for c in merged] == [True, True, True, True, False]
    pairs = [["neural network"], ["neural networks"], ["quantum computing"], ["graph theory"], ["classical computer"]]
    assert merge_similar_concepts(pairs, embedder, 0.75) == [
        ["neural network"], ["neural network"], ["quantum computing"], ["graph theory"], ["classical computer"]]
