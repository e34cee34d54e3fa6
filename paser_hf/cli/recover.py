"""`paser recover`: recovery training of a pruned model on a subset (`paser_hf.recovery.run.recover`).

The same code runs on one device and under accelerate::

    paser recover --model_name_or_path PRUNED --dataset subset.jsonl --output_dir recovered
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m paser_hf.cli.recover \\
        --config recipes/configs/llama2_7b_lora_kd.yaml

Options are the fields of `RecoverArguments` (data, merging), `RecoveryConfig` (trl's `SFTConfig` plus
distillation and the teacher) and trl's `ModelConfig` (student path, dtype, LoRA). With ``--kd_alpha`` > 0 and no
teacher, a dataset carrying stored teacher distributions (`paser teacher-logits`, or `paser select` with
``--teacher_topk``) is distilled offline; otherwise the built-in teacher is loaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

from trl import ModelConfig

from ..recovery.config import RecoveryConfig
from .common import Command, check_model, device, run_command


@dataclass
class RecoverArguments:
    """The data of `paser recover` and what is saved; the model is `--model_name_or_path` (the pruned model),
    training is configured by `RecoveryConfig` and LoRA by trl's `ModelConfig`."""

    dataset: str = field(
        metadata={"help": "Training rows (e.g. the output of `paser select`): a data file, a saved dataset folder or "
                          "a Hub id; Alpaca, prompt/completion or messages columns."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to read from a Hub dataset or DatasetDict."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    max_rows: Optional[int] = field(default=None, metadata={"help": "Train on only the first N rows (smoke runs)."})
    merge_adapters: bool = field(
        default=True,
        metadata={"help": "Merge the LoRA adapters into the weights and save a plain model in output_dir (the adapter "
                          "in output_dir/adapter); with --merge_adapters false only the adapter is saved."},
    )
    keep_sparsity: bool = field(
        default=True,
        metadata={"help": "When merging, zero again the weights that were zero in the pruned model "
                          "(merge_adapters_keep_sparsity); false merges densely (merge_and_unload)."},
    )


def recovery_defaults() -> dict:
    """Defaults of `paser recover` that differ from RecoveryConfig's (which sets CPU precision and speed itself):
    the paper's LoRA rank and an output folder."""
    return {"output_dir": "paser-recovered", "use_peft": True, "lora_r": 8, "lora_alpha": 16}


def model_init_kwargs(model_args: ModelConfig) -> dict:
    """`from_pretrained` keyword arguments of student and teacher from `--dtype` (default float32; auto: the fastest
    dtype of the device) and `--attn_implementation`."""
    from ..models import fastest_dtype

    dtype = model_args.dtype or "float32"
    if dtype == "auto":
        dtype = fastest_dtype(device())
        print(f"pruned model: dtype auto -> {dtype} on {device()}", file=sys.stderr)
    kwargs = {"dtype": dtype}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs


def run_recover(args: RecoverArguments, training: RecoveryConfig, model_args: ModelConfig) -> None:
    from accelerate import PartialState
    from accelerate.utils import is_peft_model
    from transformers import AutoTokenizer
    from trl import get_peft_config

    from ..models import default_model_path, load_data
    from ..recovery.offline import has_stored_targets
    from ..recovery.run import recover

    student = model_args.model_name_or_path
    if not student:
        raise ValueError("give the pruned model to recover with --model_name_or_path")
    check_model(student, "pruned model")
    data = load_data(args.dataset, args.dataset_split, args.dataset_config, max_rows=args.max_rows)
    if training.kd_alpha > 0 and training.teacher_model_name_or_path is None:
        if has_stored_targets(data):
            print("teacher: the distributions stored in the dataset (offline distillation)", file=sys.stderr)
        else:
            check_model(None, "teacher")
            training.teacher_model_name_or_path = default_model_path()
    init_kwargs = model_init_kwargs(model_args)
    training.model_init_kwargs = {**init_kwargs, **(training.model_init_kwargs or {})}
    if training.teacher_model_name_or_path is not None:
        training.teacher_model_init_kwargs = {**init_kwargs, **(training.teacher_model_init_kwargs or {})}

    result = recover(student, training, data, AutoTokenizer.from_pretrained(student),
                     peft_config=get_peft_config(model_args), merge_adapters=args.merge_adapters,
                     keep_sparsity=args.keep_sparsity)
    if PartialState().is_main_process:
        kind = "adapter" if is_peft_model(result.model) else "model"
        print(f"trained {result.train_output.global_step} steps on {len(data)} rows in {result.seconds:.1f} s, "
              f"mean loss {result.train_output.training_loss:.4f}; {kind} saved to {result.saved_to}")


COMMAND = Command("recover", "recovery training (LoRA SFT and/or distillation) of a pruned model on a subset",
                  (RecoverArguments, RecoveryConfig, ModelConfig), run_recover, recovery_defaults)


def main(argv=None) -> int:
    """`python -m paser_hf.cli.recover` (e.g. under `accelerate launch`): the same as `paser recover`."""
    return run_command(COMMAND, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
