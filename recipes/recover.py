"""Recover a pruned model on a dataset (typically a saved PASER selection) with `paser_hf.RecoveryTrainer`.

    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/recover.py \
        --config recipes/configs/llama2_7b_lora_kd.yaml

Arguments come from three dataclasses, read from the YAML given with ``--config`` and overridable on the command line:
`RecoveryScriptArguments` (data, merging), `paser_hf.RecoveryConfig` (training, distillation, teacher) and
`trl.ModelConfig` (student path, dtype, LoRA). A missing ``model_name_or_path``, and a missing
``teacher_model_name_or_path`` when ``kd_alpha > 0``, default to the offline SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from datasets import DatasetDict, load_dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config

from paser_hf import RecoveryConfig, RecoveryTrainer, merge_adapters_keep_sparsity
from paser_hf.models import default_model_path


@dataclass
class RecoveryScriptArguments:
    dataset_path: str = field(
        metadata={"help": "A dataset saved with `save_to_disk` (e.g. a PASER selection) or a .json / .jsonl file."}
    )
    dataset_split: str = field(
        default="train", metadata={"help": "Split to train on when `dataset_path` holds a DatasetDict."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows only (smoke runs)."}
    )
    merge_adapters: bool = field(
        default=False,
        metadata={"help": "After training, also save the student with its LoRA adapters merged to output_dir/merged."},
    )
    keep_sparsity: bool = field(
        default=True,
        metadata={
            "help": "When merging, zero again the weights that were zero in the pruned student "
            "(`merge_adapters_keep_sparsity`); False merges densely (`merge_and_unload`)."
        },
    )


def load_rows(path: str, split: str):
    """A `load_from_disk` folder (Dataset or DatasetDict) or a json / jsonl file."""
    if os.path.isdir(path):
        data = load_from_disk(path)
        return data[split] if isinstance(data, DatasetDict) else data
    if path.endswith((".json", ".jsonl")):
        return load_dataset("json", data_files=path, split="train")
    raise ValueError(f"dataset_path must be a save_to_disk folder or a .json/.jsonl file, got {path!r}.")


def merge_and_save(student_path: str, adapter_dir: str, keep_sparsity: bool, dtype) -> str:
    """Reload the base student, apply the saved adapter and merge it (once, on the main process)."""
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(student_path, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    model = PeftModel.from_pretrained(base, adapter_dir)
    merged = merge_adapters_keep_sparsity(model) if keep_sparsity else model.merge_and_unload()
    target = os.path.join(adapter_dir, "merged")
    merged.save_pretrained(target)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(target)
    return target


def main(script_args: RecoveryScriptArguments, training_args: RecoveryConfig, model_args: ModelConfig) -> None:
    student_path = model_args.model_name_or_path or default_model_path()
    if training_args.kd_alpha > 0 and training_args.teacher_model_name_or_path is None:
        training_args.teacher_model_name_or_path = default_model_path()
    init_kwargs = {"dtype": model_args.dtype or "float32"}
    if model_args.attn_implementation is not None:
        init_kwargs["attn_implementation"] = model_args.attn_implementation
    training_args.model_init_kwargs = {**init_kwargs, **(training_args.model_init_kwargs or {})}
    if training_args.teacher_model_name_or_path is not None:
        training_args.teacher_model_init_kwargs = {**init_kwargs, **(training_args.teacher_model_init_kwargs or {})}

    tokenizer = AutoTokenizer.from_pretrained(student_path)
    train_dataset = load_rows(script_args.dataset_path, script_args.dataset_split)
    if script_args.max_train_samples is not None:
        train_dataset = train_dataset.select(range(min(script_args.max_train_samples, len(train_dataset))))

    trainer = RecoveryTrainer(
        model=student_path,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    if script_args.merge_adapters and model_args.use_peft and trainer.accelerator.is_main_process:
        merge_and_save(student_path, training_args.output_dir, script_args.keep_sparsity, init_kwargs["dtype"])


if __name__ == "__main__":
    parser = TrlParser((RecoveryScriptArguments, RecoveryConfig, ModelConfig))
    main(*parser.parse_args_and_config())
