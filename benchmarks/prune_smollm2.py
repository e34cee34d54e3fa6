"""Prune SmolLM2-135M-Instruct (Wanda 50%, Wanda 2:4, structured MLP ~25% of parameters) and report WikiText-2
test perplexity on its first ~40K tokens (disjoint 1024-token windows) before and after each method.

    python benchmarks/prune_smollm2.py [--tokens 40960] [--calibration 32]

Reads ../shared/data at run time; writes benchmarks/results/prune_smollm2.json.
"""

import argparse
import json
import time
from pathlib import Path

from harness import RESULTS, calibration_texts, wikitext_prefix

from paser_hf.evaluation import perplexity
from paser_hf.models import load_model_and_tokenizer
from paser_hf.pruning import count_parameters, decoder_layers, prune_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40960)
    parser.add_argument("--calibration", type=int, default=32, help="calibration texts (alpaca_5000, seeded)")
    parser.add_argument("--out", type=Path, default=RESULTS / "prune_smollm2.json")
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(None)
    text = wikitext_prefix(tokenizer, args.tokens)
    calibration = calibration_texts(args.calibration)
    layer = decoder_layers(model)[0].mlp
    mlp_params = len(decoder_layers(model)) * 3 * layer.gate_proj.in_features * layer.gate_proj.out_features
    structured_ratio = 0.25 * count_parameters(model) / mlp_params
    runs = [
        ("dense", None),
        ("wanda 50%", {"method": "wanda", "sparsity": 0.5}),
        ("wanda 2:4", {"method": "wanda", "sparsity": None, "n_m": (2, 4)}),
        (
            f"structured_mlp {structured_ratio:.3f} of channels",
            {"method": "structured_mlp", "sparsity": structured_ratio},
        ),
    ]
    results = []
    for name, kwargs in runs:
        if kwargs is not None:
            model, tokenizer = load_model_and_tokenizer(None)
        entry = {"name": name, "num_parameters": count_parameters(model)}
        if kwargs is not None:
            start = time.perf_counter()
            report = prune_model(model, calibration_texts=calibration, tokenizer=tokenizer, **kwargs)
            entry["prune_seconds"] = round(time.perf_counter() - start, 1)
            entry["report"] = report.to_dict()
        start = time.perf_counter()
        entry["wikitext2"] = perplexity(model, tokenizer, text, max_length=1024)
        entry["eval_seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(entry), flush=True)
        results.append(entry)
        summary = {
            "model": "SmolLM2-135M-Instruct (fp32, CPU)",
            "perplexity_text": f"wiki.test.raw, first ~{args.tokens} tokens, disjoint windows of 1024",
            "calibration": f"{args.calibration} seeded alpaca_5000 rows (instruction, input, output), <=512 tokens",
            "runs": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
