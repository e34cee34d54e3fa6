"""`paser prune`: prune a model with `paser_hf.pruning.prune_model` and save it with its tokenizer and a
`pruning_report.json`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..pruning import D_PRUNER_DOMAIN_SAMPLES, D_PRUNER_GENERAL_SAMPLES, D_PRUNER_REGULARIZATION_WEIGHT, METHODS
from .common import DTYPES, Command, load_model


@dataclass
class PruneArguments:
    """Settings of `paser prune` (see `paser_hf.pruning.prune_model`)."""

    output_dir: str = field(metadata={"help": "Folder to save the pruned model and its tokenizer in."})
    model: Optional[str] = field(
        default=None, metadata={"help": "Model to prune. None uses the built-in offline SmolLM2-135M-Instruct."}
    )
    method: str = field(
        default="wanda",
        metadata={"help": "magnitude, wanda (|W| x input norm), d_pruner (domain-specific: needs --domain_dataset), "
                          "structured_mlp (removes MLP channels) or layer_drop (removes decoder layers).",
                  "choices": list(METHODS)},
    )
    sparsity: Optional[float] = field(
        default=None,
        metadata={"help": "Fraction of weights, MLP channels or layers to remove; None means 0.5 (or 1 - N/M with "
                          "--n_m)."},
    )
    n_m: Optional[str] = field(default=None, metadata={"help": "N:M semi-structured sparsity, e.g. 2:4."})
    per_row: bool = field(default=False, metadata={"help": "magnitude only: compare weights within each output row."})
    calibration_dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Calibration texts for wanda, layer_drop and structured_mlp, and d_pruner's open-domain set: "
                          "a data file, saved dataset or Hub id (a 'text' column, or instruction data). None uses "
                          "the shipped demo set."},
    )
    calibration_split: str = field(default="train", metadata={"help": "Split of the calibration dataset."})
    calibration_samples: Optional[int] = field(
        default=None,
        metadata={"help": f"Calibration rows to use (a seeded sample); None means 64, or {D_PRUNER_GENERAL_SAMPLES} "
                          "for d_pruner (the paper's open-domain set)."},
    )
    calibration_max_length: int = field(default=256, metadata={"help": "Tokens kept of each calibration text."})
    domain_dataset: Optional[str] = field(
        default=None,
        metadata={"help": "d_pruner: texts of the target domain, in the forms --calibration_dataset takes."},
    )
    domain_split: str = field(default="train", metadata={"help": "Split of the domain dataset."})
    domain_samples: int = field(
        default=D_PRUNER_DOMAIN_SAMPLES,
        metadata={"help": "d_pruner: domain rows to use (a seeded sample; one backward pass each)."},
    )
    regularization_weight: float = field(
        default=D_PRUNER_REGULARIZATION_WEIGHT,
        metadata={"help": "d_pruner: weight lambda of the general-importance regulariser in the domain loss."},
    )
    dtype: str = field(default="float32", metadata={"help": "Dtype the model is loaded and saved in.",
                                                    "choices": DTYPES})
    seed: int = field(default=0, metadata={"help": "Seed of the calibration sample."})


def parse_n_m(spec: Optional[str]) -> Optional[tuple[int, int]]:
    """``"2:4"`` -> ``(2, 4)``; None stays None."""
    if spec is None:
        return None
    try:
        n, m = (int(v) for v in spec.split(":"))
    except ValueError:
        raise ValueError(f"n_m={spec!r}; write it as N:M, e.g. 2:4") from None
    return n, m


def run_prune(args: PruneArguments) -> None:
    from ..formatting import detect_format
    from ..models import DEMO_TRAIN, load_data
    from ..pruning import prune_model, sample_calibration_texts

    n_m = parse_n_m(args.n_m)
    sparsity = args.sparsity if args.sparsity is not None or n_m else 0.5
    d_pruner = args.method == "d_pruner"
    if d_pruner and not args.domain_dataset:
        raise ValueError("--method d_pruner needs --domain_dataset (texts of the target domain).")
    if args.domain_dataset and not d_pruner:
        raise ValueError(f"--domain_dataset applies to --method d_pruner only, not {args.method}.")

    def texts_of(option: str, spec: str, split: str, samples: int) -> list[str]:
        data = load_data(spec, split)
        fix = "give it a 'text' column or instruction data (e.g. instruction/input/output)"
        if "text" not in data.column_names:
            try:
                detect_format(data.column_names)
            except ValueError:
                raise ValueError(f"--{option} {spec} has no text column (its columns: {sorted(data.column_names)}); "
                                 f"{fix}.") from None
        texts = sample_calibration_texts(data, samples, seed=args.seed)
        if not texts:
            raise ValueError(f"--{option} {spec} (split {split!r}) has no non-blank text; {fix}.")
        return texts

    texts = domain = None
    if args.method != "magnitude":
        samples = args.calibration_samples
        if samples is None:
            samples = D_PRUNER_GENERAL_SAMPLES if d_pruner else 64
        texts = texts_of("calibration_dataset", args.calibration_dataset or str(DEMO_TRAIN), args.calibration_split,
                         samples)
    if d_pruner:
        domain = texts_of("domain_dataset", args.domain_dataset, args.domain_split, args.domain_samples)
    model, tokenizer = load_model(args.model, args.dtype, "model")
    t0 = time.perf_counter()
    extra = {"domain_texts": domain, "regularization_weight": args.regularization_weight} if d_pruner else {}
    report = prune_model(model, method=args.method, sparsity=sparsity, n_m=n_m, calibration_texts=texts,
                         tokenizer=tokenizer, per_row=args.per_row, calibration_max_length=args.calibration_max_length,
                         **extra)
    seconds = time.perf_counter() - t0
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    Path(args.output_dir, "pruning_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"{args.method}: sparsity {report.sparsity:.4f} of the decoder Linear weights (target "
          f"{report.target_sparsity:g}), {seconds:.1f} s")
    print(f"parameters: {report.num_parameters_before:,} -> {report.num_parameters_after:,} stored, "
          f"{report.nonzero_parameters_after:,} non-zero")
    print(f"saved to {args.output_dir}")


COMMAND = Command("prune", "prune a model and save it", (PruneArguments,), run_prune)
