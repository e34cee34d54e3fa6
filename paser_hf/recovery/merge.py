"""Merging LoRA adapters into a pruned model without filling its pruned zeros."""

from __future__ import annotations

import torch
from accelerate.utils import is_peft_model


def merge_adapters_keep_sparsity(model):
    """Merge LoRA adapters into the base weights and keep the base weights' zeros: returns the merged base model.

    A LoRA update ``B A`` is dense, so `merge_and_unload` fills the zeroed weights of an unstructured-pruned student.
    For each adapted layer this merges ``W <- W + s * B A`` and then sets ``W[W_before == 0] = 0``, one layer at a time
    (one boolean mask alive at once). Use it instead of ``model.merge_and_unload()`` when the recovered model must stay
    as sparse as the pruned one; the dropped update entries are the price of keeping the sparsity pattern.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not is_peft_model(model):
        raise TypeError(f"Expected a PeftModel with adapters to merge, got {type(model).__name__}.")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BaseTunerLayer) and not module.merged:
                zeros = module.get_base_layer().weight == 0
                module.merge()
                module.get_base_layer().weight.masked_fill_(zeros, 0.0)
    return model.unload()
