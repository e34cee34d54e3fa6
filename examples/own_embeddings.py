"""Cluster instructions from embeddings you computed yourself with `cluster_instructions` (PASER's S²RIC step).

    python examples/own_embeddings.py            # all 365 demo rows
    python examples/own_embeddings.py --quick    # 120 rows (a few seconds after the imports)

Any (N, D) float array works: rows are L2-normalised, mapped to diffusion coordinates of their Gaussian k-NN
affinity graph and clustered by symmetric NMF, K picked by the elbow of the NMF error curve (arXiv 2502.12594,
Eq. 2-3). Here the embeddings come from the all-MiniLM-L6-v2 that ships with paser-hf, through
sentence-transformers as you would call your own model; the demo rows carry a `capability` column, so the
clusters can be compared with it.
"""

import argparse
import time
from collections import Counter
from importlib.resources import files

from datasets import load_dataset
from sentence_transformers import SentenceTransformer
from sklearn.metrics import adjusted_rand_score

from paser_hf import PaserConfig, cluster_instructions
from paser_hf.models import default_embedder_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows")
    args = parser.parse_args()
    start = time.perf_counter()

    dataset = load_dataset("json", data_files=str(files("paser_hf") / "data" / "demo.jsonl"), split="train")
    if args.quick:
        dataset = dataset.shuffle(seed=0).select(range(120))
    texts = [f"{row['instruction']}\n{row['input']}".strip() for row in dataset]
    model = SentenceTransformer(default_embedder_path(), device="cpu")
    embeddings = model.encode(texts, batch_size=64, convert_to_numpy=True)  # (N, 384) float32
    embedded = time.perf_counter()

    result = cluster_instructions(embeddings, config=PaserConfig(seed=0, show_progress=False))
    clustered = time.perf_counter()

    print(f"{len(texts)} rows, {embeddings.shape[1]}-d embeddings -> K = {result.k} clusters "
          f"({result.method} path; NMF error by K: {({k: round(v, 3) for k, v in result.k_curve.items()})})")
    capabilities = dataset["capability"]
    for cluster in range(result.k):
        members = Counter(c for c, label in zip(capabilities, result.labels) if label == cluster)
        print(f"  cluster {cluster}: {sum(members.values())} rows, {dict(members.most_common())}")
    print(f"adjusted Rand index against the capability column: {adjusted_rand_score(capabilities, result.labels):.3f}")
    print(f"seconds: loading and embedding {embedded - start:.1f}, clustering {clustered - embedded:.1f}, "
          f"total {clustered - start:.1f}")


if __name__ == "__main__":
    main()
