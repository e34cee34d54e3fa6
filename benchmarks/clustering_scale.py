"""Scale benchmark of S²RIC clustering (issue 4): time, peak memory, K and ARI against planted clusters.

Each size runs `cluster_instructions` in a fresh subprocess, so the peak RSS (ru_maxrss) is per size and
includes the 384-d float32 embeddings themselves. Writes a JSON file and a log-log PNG of time and memory vs N
with the fitted slopes.

    python benchmarks/clustering_scale.py --sizes 50000 200000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
from harness import RESULTS, emit, peak_rss_gib, run_child


def planted_embeddings(n: int, dim: int = 384, clusters: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around `clusters` random centres, each cluster spread on its own 8-d subspace plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, 8, dim)) / np.sqrt(8 * dim)
    labels = rng.integers(0, clusters, n)
    x = np.empty((n, dim), dtype=np.float32)
    for c in range(clusters):
        rows = np.flatnonzero(labels == c)
        for start in range(0, len(rows), 50_000):
            block_rows = rows[start : start + 50_000]
            block = centres[c] + 0.6 * rng.standard_normal((len(block_rows), 8)) @ bases[c]
            block += 0.3 / np.sqrt(dim) * rng.standard_normal((len(block_rows), dim))
            x[block_rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, labels


def run_one(n: int, clusters: int, seed: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from paser_hf.selection.clustering import cluster_instructions
    from paser_hf.selection.config import PaserConfig

    x, truth = planted_embeddings(n, clusters=clusters, seed=seed)
    start = time.perf_counter()
    result = cluster_instructions(x, config=PaserConfig(seed=seed, show_progress=False))
    seconds = time.perf_counter() - start
    record = result.to_dict()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record.update(
        n=n,
        seconds=seconds,
        cpu_seconds_process=usage.ru_utime + usage.ru_stime,
        peak_rss_gib=peak_rss_gib(),
        ari=float(adjusted_rand_score(truth, result.labels)),
        planted_k=clusters,
    )
    return record


def slope(xs, ys) -> float:
    """Least-squares slope of log y on log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) > 1 else float("nan")


def plot(records: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "seconds", "time (s)"), (axes[1], "peak_rss_gib", "peak RSS (GiB)")):
        ys = [r[key] for r in records]
        ax.loglog(ns, ys, "o-", label=f"slope {slope(ns, ys):.2f}")
        ax.set_xlabel("N (rows, 384-d)")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("S²RIC clustering scale (sparse path)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    parser.add_argument("--clusters", type=int, default=12, help="Planted clusters.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "clustering_scale.json"))
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_size:
        emit(run_one(args.child_size, args.clusters, args.seed))
        return
    records = []
    for n in args.sizes:
        record = run_child(__file__, "--child-size", str(n), "--clusters", str(args.clusters), "--seed", str(args.seed))
        records.append(record)
        print(
            f"N={n}: {record['seconds']:.1f} s, peak {record['peak_rss_gib']:.2f} GiB, k={record['k']}, "
            f"ARI={record['ari']:.3f}, stages={ {k: round(v, 1) for k, v in record['timings'].items()} }",
            flush=True,
        )
    print(f"\n{'N':>9} {'time s':>8} {'cpu s':>8} {'peak GiB':>9} {'k':>3} {'ARI':>6} {'method':>7}")
    for r in records:
        print(
            f"{r['n']:>9} {r['seconds']:>8.1f} {r['cpu_seconds_process']:>8.1f} {r['peak_rss_gib']:>9.2f} "
            f"{r['k']:>3} {r['ari']:>6.3f} {r['method']:>7}"
        )
    ns = [r["n"] for r in records]
    summary = {
        "time_slope": slope(ns, [r["seconds"] for r in records]),
        "memory_slope": slope(ns, [r["peak_rss_gib"] for r in records]),
        "cpu_count": os.cpu_count(),
    }
    print(f"log-log slope: time {summary['time_slope']:.2f}, memory {summary['memory_slope']:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"summary": summary, "runs": records}, handle, indent=2)
    plot(records, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
    main()
