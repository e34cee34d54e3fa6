"""Scale of negative transfer mitigation (arXiv 2502.12594, Sec. 3.4): the concept graph on synthetic rows, RAKE
on real rows.

Part 1 builds the concept consistency graph through `try_add` on `--rows` synthetic concept sets
(concept ids from a seeded Zipf-Mandelbrot law whose repeat rates resemble RAKE concepts of
mix_train; at most 10 per row, 38% of rows with 10 as in mix_train), once per backend, each in a
fresh subprocess so peak memory is its own: `lean` is `paser_hf.selection.concepts.ConceptGraph`, `networkx`
the same rule on a `networkx.Graph`. Mode `try_add` is the selection loop; mode `add` accepts every
row (the worst case for memory: every pair becomes an edge).
Part 2 times `ConceptExtractor` on the real rows of mix_train (read at run time), extrapolates to
`--rows`, and runs the graph on those concepts in file order. Wall-clock timings on a shared machine
are noisy; CPU seconds are reported beside them.

    python benchmarks/concept_graph_scale.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from itertools import combinations
from pathlib import Path

import networkx as nx
import numpy as np
import psutil
from harness import MIX_TRAIN, RESULTS, emit, peak_rss_gib, run_child

from paser_hf.selection.concepts import ConceptExtractor, ConceptGraph

OUT = RESULTS / "concept_graph_scale.json"
CHUNK = 20_000


class NetworkxConceptGraph:
    """The paper's IsConsistent and graph update (Sec. 3.4) on a `networkx.Graph`, for comparison only."""

    def __init__(self):
        self.graph = nx.Graph()

    def try_add(self, concepts):
        concepts = list(dict.fromkeys(concepts))
        adj = self.graph._adj
        known = [c for c in concepts if c in adj]
        for n, u in enumerate(known):
            neighbours = adj[u]
            if any(v not in neighbours for v in known[n + 1 :]):
                return False
        self.add(concepts)
        return True

    def add(self, concepts):
        concepts = list(dict.fromkeys(concepts))
        self.graph.add_nodes_from(concepts)
        self.graph.add_edges_from(combinations(concepts, 2))

    @property
    def num_nodes(self):
        return self.graph.number_of_nodes()

    @property
    def num_edges(self):
        return self.graph.number_of_edges()


def vocabulary(vocab: int, exponent: float, offset: float) -> tuple[np.ndarray, list[str]]:
    """Names of `vocab` concepts and the CDF of p(rank) ~ 1/(rank + offset)^exponent."""
    cdf = np.cumsum(1.0 / (np.arange(1, vocab + 1) + offset) ** exponent)
    return cdf / cdf[-1], [f"concept {i}" for i in range(vocab)]


def synthetic_rows(rows: int, cdf: np.ndarray, names: list[str], seed: int):
    """Chunks of `CHUNK` concept sets drawn from the vocabulary, 1-10 concepts per row."""
    rng = np.random.default_rng(seed)
    sizes = np.array([0.62 / 9] * 9 + [0.38])
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        counts = rng.choice(np.arange(1, 11), size=n, p=sizes)
        ids = np.searchsorted(cdf, rng.random(int(counts.sum())))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        flat = [names[i] for i in ids.tolist()]
        yield [flat[bounds[k] : bounds[k + 1]] for k in range(n)]


def build(args) -> dict:
    """Child process: build one backend's graph and report time, memory and size."""
    process = psutil.Process()
    graph = ConceptGraph() if args.child == "lean" else NetworkxConceptGraph()
    cdf, names = vocabulary(args.vocab, args.zipf, args.zipf_offset)
    rss_start = process.memory_info().rss
    step = graph.add if args.mode == "add" else graph.try_add
    seconds, cpu_seconds, accepted = 0.0, 0.0, 0
    for chunk in synthetic_rows(args.rows, cdf, names, args.seed):
        t0, c0 = time.perf_counter(), time.process_time()
        for concepts in chunk:
            accepted += step(concepts) is not False
        seconds += time.perf_counter() - t0
        cpu_seconds += time.process_time() - c0
    rss_end = process.memory_info().rss
    return {
        "backend": args.child,
        "mode": args.mode,
        "rows": args.rows,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "rows_per_s": round(args.rows / seconds),
        "peak_rss_mb": round(peak_rss_gib() * 1024),
        "graph_rss_mb": round((rss_end - rss_start) / 2**20),
        "nodes": graph.num_nodes,
        "edges": graph.num_edges,
        "accept_rate": round(accepted / args.rows, 4),
    }


def extraction(args) -> dict:
    """Rows/s of `ConceptExtractor` on mix_train (instruction + input, and with the output too)."""
    with open(args.data, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    extractor = ConceptExtractor()
    result = {"data": args.data, "data_rows": len(rows)}
    sources = {
        "instruction": lambda r: f"{r['instruction']}\n{r.get('input', '')}".strip(),
        "instruction_output": lambda r: f"{r['instruction']}\n{r.get('input', '')}\n{r.get('output', '')}".strip(),
    }
    for name, text_of in sources.items():
        texts = [text_of(r) for r in rows]
        t0, c0 = time.perf_counter(), time.process_time()
        concepts = extractor.batch(texts)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        graph = ConceptGraph()
        accepted = sum(graph.try_add(c) for c in concepts)
        result[name] = {
            "mean_chars": round(sum(map(len, texts)) / len(texts)),
            "mean_concepts": round(sum(map(len, concepts)) / len(concepts), 2),
            "rows_per_s": round(len(texts) / seconds),
            "rows_per_cpu_s": round(len(texts) / cpu_seconds),
            "extrapolated_s_for_rows": round(args.rows * seconds / len(texts), 1),
            "accept_rate_in_file_order": round(accepted / len(texts), 4),
            "graph_nodes": graph.num_nodes,
            "graph_edges": graph.num_edges,
        }
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--vocab", type=int, default=1_000_000, help="Distinct synthetic concepts.")
    parser.add_argument("--zipf", type=float, default=1.0, help="Exponent of the Zipf-Mandelbrot law.")
    parser.add_argument("--zipf-offset", type=float, default=5.0, help="Rank offset of the Zipf-Mandelbrot law.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", default=["lean", "networkx"], choices=["lean", "networkx"])
    parser.add_argument("--modes", nargs="+", default=["try_add", "add"], choices=["try_add", "add"])
    parser.add_argument("--data", default=str(MIX_TRAIN), help="JSONL rows with instruction/input/output for part 2.")
    parser.add_argument("--skip-extraction", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", choices=["lean", "networkx"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["try_add", "add"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        emit(build(args))
        return
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared (noisy timings)",
        "synthetic": {k: getattr(args, k) for k in ("rows", "vocab", "zipf", "zipf_offset", "seed")},
        "graph": [],
    }
    for mode in args.modes:
        for backend in args.backends:
            result = run_child(__file__, *sys.argv[1:], "--child", backend, "--mode", mode)
            print(json.dumps(result))
            report["graph"].append(result)
    if not args.skip_extraction:
        report["extraction"] = extraction(args)
        print(json.dumps(report["extraction"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
