"""Save a PASER subset with its dataset card, scores, config and report; then publish it to the Hugging Face Hub.

    python examples/save_and_publish.py --quick                                   # save, then a dry-run push
    python examples/save_and_publish.py --repo-id you/alpaca-paser --no-dry-run   # really push (needs a token)

`save_selection` writes the bundle to a folder: the subset (`load_from_disk(folder)`), the per-row scores
(`folder/scores`), `README.md` (a dataset card saying how the subset was chosen), `paser_config.yaml` and
`report/` (report.json, report.md, figures). `push_selection_to_hub` pushes the same bundle to a dataset
repository: the subset as config `default`, the scores as config `scores`, then the card, config and report in
one commit. The push is a dry run unless `--no-dry-run` is given: it only prints what would be pushed, so
nothing reaches the network. `--quick`: 24 demo rows, 64 tokens (under a minute on 2 cores).
"""

import argparse
import copy
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from datasets import load_dataset, load_from_disk

from paser_hf import PaserConfig, PaserDatasetSelector, prune_model, push_selection_to_hub, save_selection
from paser_hf.models import load_model_and_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run: few rows, short sequences")
    parser.add_argument("--output-dir", default=None, help="where to save the bundle (default: a temporary folder)")
    parser.add_argument("--repo-id", default="your-name/paser-demo-subset", help="Hub dataset repository")
    parser.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=True,
                        help="print what would be pushed instead of pushing (the default)")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    args = parser.parse_args()
    rows, max_length = (24, 64) if args.quick else (200, 256)
    start = time.perf_counter()

    original, tokenizer = load_model_and_tokenizer()  # None: the offline SmolLM2-135M-Instruct
    pruned = copy.deepcopy(original)
    prune_model(pruned, method="magnitude", sparsity=0.5)
    dataset = load_dataset("json", data_files=str(files("paser_hf") / "data" / "demo.jsonl"), split="train")
    dataset = dataset.shuffle(seed=0).select(range(rows)).flatten_indices()
    selector = PaserDatasetSelector(original, pruned, tokenizer,
                                    config=PaserConfig(budget=0.25, max_length=max_length, show_progress=False))
    subset = selector(dataset)
    selected = time.perf_counter()

    about = {"report": selector.report_, "scores": selector.scores_, "source_dataset": "paser-hf demo.jsonl",
             "license": "apache-2.0", "pretty_name": "PASER demo subset",
             "original_model": "SmolLM2-135M-Instruct", "pruned_model": "SmolLM2-135M-Instruct, 50% magnitude"}
    folder = Path(args.output_dir or tempfile.mkdtemp(prefix="paser-subset-"))
    save_selection(subset, folder, **about)
    assert load_from_disk(str(folder)).num_rows == len(subset)
    bundle = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    print(f"saved {len(subset)} of {rows} rows to {folder}:")
    print("\n".join(f"  {name}" for name in bundle))
    saved = time.perf_counter()

    if args.dry_run:
        print(f"dry run: would push to https://huggingface.co/datasets/{args.repo_id} "
              f"({'private' if args.private else 'public'}):")
        print(f"  config 'default', split 'train': {len(subset)} rows, columns {subset.column_names}")
        print(f"  config 'scores', split 'train': {selector.scores_.num_rows} rows, "
              f"columns {selector.scores_.column_names}")
        print("  one commit with README.md (the dataset card), paser_config.yaml and report/")
        print("pass --no-dry-run (and log in with `hf auth login`) to push")
    else:
        commit = push_selection_to_hub(subset, args.repo_id, private=args.private, **about)
        print(f"pushed: {commit.commit_url}")
    end = time.perf_counter()
    print(f"seconds: loading, pruning and selection {selected - start:.1f}, saving {saved - selected:.1f}, "
          f"total {end - start:.1f}")


if __name__ == "__main__":
    main()
