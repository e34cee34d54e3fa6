"""`recover`: one recovery run of a pruned model, used by `paser recover` (also under `accelerate launch`), the demo
and the recovery benchmark.

It trains with `RecoveryTrainer` (paper Sec. 4: LoRA SFT, or logit distillation from the unpruned model, App. F),
then merges the LoRA adapters into the weights, by default keeping the pruned zeros (`merge_adapters_keep_sparsity`),
and saves the result: the merged model and tokenizer in ``output_dir``, the adapter in ``output_dir/adapter``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from accelerate.utils import is_peft_model
from transformers.trainer_utils import TrainOutput

from .config import RecoveryConfig
from .merge import merge_adapters_keep_sparsity
from .trainer import RecoveryTrainer

ADAPTER_DIR = "adapter"


@dataclass
class RecoveryResult:
    """What `recover` trained and where it went.

    ``model`` is the recovered model in eval mode (merged unless ``merge_adapters=False``); after FSDP or ZeRO-3
    training it is merged on the main process only and is None on the others. ``seconds`` is the wall time of
    ``train()``. ``saved_to`` is ``output_dir``, or None when nothing was saved.
    """

    model: Any
    train_output: TrainOutput
    seconds: float
    saved_to: str | None


def _sharded(trainer: RecoveryTrainer) -> bool:
    zero3 = trainer.is_deepspeed_enabled and trainer.args.deepspeed_plugin.zero_stage == 3
    return trainer.is_fsdp_enabled or zero3


def _merge(model, keep_sparsity: bool):
    return (merge_adapters_keep_sparsity(model) if keep_sparsity else model.merge_and_unload()).eval()


def _merge_from_disk(student: str, adapter_dir: str, args: RecoveryConfig, keep_sparsity: bool):
    """The student reloaded from `student` with the saved adapter, merged (sharded weights cannot be merged)."""
    from peft import PeftModel
    from trl.trainer.utils import create_model_from_path

    base = create_model_from_path(student, **(args.model_init_kwargs or {}))
    return _merge(PeftModel.from_pretrained(base, adapter_dir), keep_sparsity)


def recover(model, args: RecoveryConfig, train_dataset, processing_class, peft_config=None, teacher_model=None,
            merge_adapters: bool = True, keep_sparsity: bool = True, save: bool = True) -> RecoveryResult:
    """Train `model` (a pruned model, or the path of one) on `train_dataset` with `RecoveryTrainer` and return the
    recovered model.

    ``args``, ``peft_config`` and ``teacher_model`` go to `RecoveryTrainer` as they are (the teacher may also be
    ``args.teacher_model_name_or_path``). With LoRA and ``merge_adapters`` the adapters are merged into the weights:
    ``W <- W + s B A`` with the zeros of ``W`` set again when ``keep_sparsity`` (else `merge_and_unload`, dense).
    With ``save`` the result goes to ``args.output_dir`` (merged model and tokenizer; the adapter in
    ``output_dir/adapter``), written by the main process.
    """
    trainer = RecoveryTrainer(model=model, teacher_model=teacher_model, args=args, train_dataset=train_dataset,
                              processing_class=processing_class, peft_config=peft_config)
    merging = merge_adapters and is_peft_model(trainer.model)
    if merging and _sharded(trainer) and not isinstance(model, str):
        raise ValueError("merging after FSDP or ZeRO-3 training reloads the student from disk: pass the pruned "
                         "model by path, or set merge_adapters=False")
    start = time.perf_counter()
    train_output = trainer.train()
    seconds = time.perf_counter() - start
    saved_to = args.output_dir if save else None
    if not merging:
        if save:
            trainer.save_model(args.output_dir)
        return RecoveryResult(trainer.model, train_output, seconds, saved_to)

    adapter_dir = os.path.join(args.output_dir, ADAPTER_DIR)
    if save or _sharded(trainer):
        trainer.save_model(adapter_dir)
    accelerator = trainer.accelerator
    if not _sharded(trainer):
        merged = _merge(trainer.model, keep_sparsity)
    else:
        accelerator.wait_for_everyone()
        merged = _merge_from_disk(model, adapter_dir, args, keep_sparsity) if accelerator.is_main_process else None
    if save and accelerator.is_main_process:
        merged.save_pretrained(args.output_dir)
        trainer.processing_class.save_pretrained(args.output_dir)
    accelerator.wait_for_everyone()
    return RecoveryResult(merged, train_output, seconds, saved_to)
