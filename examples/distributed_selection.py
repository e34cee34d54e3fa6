"""PASER selection under `accelerate launch`: embedding and JSD scoring are split across the processes, clustering
and selection run on the main process, and every process returns the same subset.

    accelerate launch --num_processes 2 examples/distributed_selection.py              # 2 GPUs
    accelerate launch --multi_gpu --num_processes 2 examples/distributed_selection.py  # 2 CPU processes (gloo)
    python examples/distributed_selection.py --quick                                   # one process

On a machine without GPUs `--multi_gpu` starts two torchrun processes that join over gloo (accelerate's `--cpu`
launcher starts only one unless MPI is set up). `--quick`: 24 demo rows, 64 tokens (under a minute on 2 cores).
Offline: the built-in SmolLM2-135M-Instruct, pruned here by 50% magnitude, and the data shipped with paser-hf.
"""

import argparse
import copy
import time
from importlib.resources import files

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import load_dataset

from paser_hf import PaserConfig, PaserDatasetSelector, prune_model
from paser_hf.models import load_model_and_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run: few rows, short sequences")
    args = parser.parse_args()
    rows, max_length = (24, 64) if args.quick else (200, 256)
    start = time.perf_counter()
    state = PartialState(cpu=not torch.cuda.is_available())

    original, tokenizer = load_model_and_tokenizer()  # None: the offline SmolLM2-135M-Instruct
    pruned = copy.deepcopy(original)
    prune_model(pruned, method="magnitude", sparsity=0.5)
    original.to(state.device)
    pruned.to(state.device)
    dataset = load_dataset("json", data_files=str(files("paser_hf") / "data" / "demo.jsonl"), split="train")
    dataset = dataset.shuffle(seed=0).select(range(rows)).flatten_indices()
    loaded = time.perf_counter()

    selector = PaserDatasetSelector(original, pruned, tokenizer,
                                    config=PaserConfig(budget=0.25, max_length=max_length, show_progress=False))
    subset = selector(dataset)
    selected = time.perf_counter()

    every = gather_object([[int(i) for i in selector.selected_indices_]])
    print(f"process {state.process_index}: {len(subset)} rows selected", flush=True)
    if state.is_main_process:
        same = all(indices == every[0] for indices in every)
        print(f"{state.num_processes} process(es) on {state.device.type}; the same subset on every process: {same}")
        print(f"selected rows: {every[0]}")
        print(f"seconds: loading and pruning {loaded - start:.1f}, selection {selected - loaded:.1f}, "
              f"total {selected - start:.1f}")


if __name__ == "__main__":
    main()
