"""Concept-graph rejection rates under the authors' concept settings (paper §3.4; reviews A2, A5).

For each data set, the concepts of every row (instruction + input, as the selector uses them) go
through `ConceptGraph.try_add` in a seeded random order until 20% of the pool is accepted;
reported is rejected / examined, per seed, for four settings:

- ``old``: 1-4 word phrases, no task-word filter (this project's earlier default, with today's stop-words,
  which add the auxiliaries does/did/doing/having/shall);
- ``min2_no_filter``: 2-4 word phrases, no task-word filter;
- ``new_defaults``: 2-4 word phrases, phrases made only of `TASK_WORDS` dropped (`ConceptExtractor()`);
- ``new_defaults_sim<t>``: the same, then `merge_similar_concepts` with all-MiniLM-L6-v2 at threshold t
  (0.75 is the authors' value).

The authors report 12-18% of candidate samples rejected. Also reported: extraction time, the cost of
the similarity merge (embedding, leader assignment), merged-phrase examples and the top concepts.
Timings are wall-clock on a shared 2-core machine: noisy.

    python benchmarks/concept_rejections.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from harness import DATA, RESULTS

from paser_hf.formatting import instruction_text
from paser_hf.selection.concepts import ConceptExtractor, ConceptGraph, leader_ids
from paser_hf.selection.embedding import load_embedder

OUT = RESULTS / "concept_rejections.json"


def fill(concepts: list, fraction: float, seed: int) -> dict:
    """Accept rows through the graph in a seeded random order until round(fraction * N) are accepted."""
    order = list(range(len(concepts)))
    random.Random(seed).shuffle(order)
    target = max(1, round(fraction * len(concepts)))
    graph, accepted, examined = ConceptGraph(), 0, 0
    for i in order:
        if accepted == target:
            break
        examined += 1
        accepted += graph.try_add(concepts[i])
    return {
        "seed": seed,
        "target": target,
        "accepted": accepted,
        "examined": examined,
        "rejected": examined - accepted,
        "rejection_rate": round((examined - accepted) / examined, 4),
        "filled": accepted == target,
    }


def rejections(concepts: list, fraction: float, seeds: list) -> dict:
    runs = [fill(concepts, fraction, s) for s in seeds]
    rates = [r["rejection_rate"] for r in runs]
    return {"mean_rejection_rate": round(float(np.mean(rates)), 4), "runs": runs}


def describe(concepts: list) -> dict:
    counts = Counter(p for row in concepts for p in set(row))
    return {
        "mean_concepts_per_row": round(sum(map(len, concepts)) / len(concepts), 2),
        "rows_without_concepts": sum(not row for row in concepts),
        "distinct_concepts": len(counts),
        "top_concepts": counts.most_common(15),
    }


def similarity(concepts: list, embedder, thresholds: list, batch_size: int, seed: int) -> tuple:
    """Embed each distinct phrase once, then the leader assignment per threshold; costs and examples."""
    phrases = list(dict.fromkeys(p for row in concepts for p in row))
    t0 = time.perf_counter()
    vectors = embedder.encode(
        phrases, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)
    embed_s = time.perf_counter() - t0
    cost = {
        "distinct_phrases": len(phrases),
        "embed_s": round(embed_s, 1),
        "phrases_per_s": round(len(phrases) / embed_s),
    }
    merged = {}
    rng = random.Random(seed)
    for t in thresholds:
        t0 = time.perf_counter()
        lead = leader_ids(vectors, t)
        leader_s = time.perf_counter() - t0
        canonical = {p: phrases[j] for p, j in zip(phrases, lead.tolist())}
        rows = [list(dict.fromkeys(canonical[p] for p in row)) for row in concepts]
        members = [i for i, j in enumerate(lead.tolist()) if i != j]
        examples = [
            (phrases[i], phrases[lead[i]], round(float(vectors[i] @ vectors[lead[i]]), 3))
            for i in sorted(rng.sample(members, min(12, len(members))))
        ]
        merged[t] = (rows, {
            "leader_s": round(leader_s, 1),
            "vertices_after_merge": len(set(lead.tolist())),
            "phrases_merged_into_another": len(members),
            "rows_changed": sum(a != b for a, b in zip(rows, concepts)),
            "examples": examples,
        })
    return cost, merged


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["mix_train", "alpaca_5000"])
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.75, 0.85])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    embedder = load_embedder()
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared (noisy timings)",
        "authors_rejection_rate": "12-18% of candidate samples (reviews, answers on NTM and noisy instructions)",
        "fraction": args.fraction,
        "data": {},
    }
    settings = {
        "old": ConceptExtractor(10, 1, 4, task_words=()),
        "min2_no_filter": ConceptExtractor(10, 2, 4, task_words=()),
        "new_defaults": ConceptExtractor(),
    }
    for name in args.data:
        with open(DATA / "instruct" / f"{name}.jsonl", encoding="utf-8") as handle:
            texts = [instruction_text(json.loads(line), "alpaca") for line in handle]
        result = {"rows": len(texts), "settings": {}}
        for label, extractor in settings.items():
            t0 = time.perf_counter()
            concepts = extractor.batch(texts)
            entry = {"extractor": repr(extractor), "extract_s": round(time.perf_counter() - t0, 2)}
            entry.update(describe(concepts))
            entry.update(rejections(concepts, args.fraction, args.seeds))
            result["settings"][label] = entry
            print(name, label, entry["mean_rejection_rate"], entry["extract_s"], flush=True)
        cost, merged = similarity(concepts, embedder, args.thresholds, args.batch_size, args.seeds[0])
        result["similarity_cost"] = cost
        for t, (rows, info) in merged.items():
            entry = {**info, **describe(rows), **rejections(rows, args.fraction, args.seeds)}
            entry["total_s"] = round(cost["embed_s"] + info["leader_s"], 1)
            result["settings"][f"new_defaults_sim{t}"] = entry
            print(name, f"sim{t}", entry["mean_rejection_rate"], cost, info["leader_s"], flush=True)
        report["data"][name] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
