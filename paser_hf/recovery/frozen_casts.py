"""Frozen float32 weights cast once to the autocast dtype and kept across steps, for bfloat16 autocast on CPU.

Autocast casts a weight to bfloat16 at every use and caches the cast only for leaves that require a gradient, within
one autocast region. A frozen weight (every weight of the teacher, the LM head of a LoRA student) is therefore cast
again at every forward: on 2 CPU cores the casts of SmolLM2-135M's weights took about 100 ms of a 2.5 s distillation
step, and the cast of its 49,152 x 576 LM head alone 18 ms. A product under autocast rounds both factors to bfloat16,
so a weight cast once gives the same products. On an accelerator the cast is cheap and memory is scarce: the cache
keeps nothing there and casts at each call.
"""

from __future__ import annotations

import torch


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


class FrozenCasts:
    """Casts of frozen float32 tensors to the autocast dtype of their device, made once per parameter on CPU (a
    tensor made anew at each step, such as a gathered shard, is cast at each call).

    A cached cast is made again when its tensor is changed in place (its version counter moves) or when the autocast
    dtype changes. The cache holds a copy of each tensor it casts: half the memory of the float32 weights it serves.
    With ``keep=False`` it keeps nothing: each call casts again, and `linear_weights` is empty.
    """

    def __init__(self, keep: bool = True):
        self.keep = keep
        self._entries: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def __call__(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """`tensor` cast to the autocast dtype of its device while autocast is on there; unchanged when it needs a
        gradient, is not float32, or autocast is off."""
        if tensor is None or tensor.requires_grad or tensor.dtype != torch.float32:
            return tensor
        dtype = _autocast_dtype(tensor.device)
        if dtype is None:
            return tensor
        if not self.keep or tensor.device.type != "cpu" or not isinstance(tensor, torch.nn.Parameter):
            return tensor.to(dtype)
        entry = self._entries.get(id(tensor))
        if entry is not None and entry[0] is tensor and entry[1] == tensor._version and entry[2].dtype == dtype:
            return entry[2]
        cast = tensor.to(dtype)
        self._entries[id(tensor)] = (tensor, tensor._version, cast)
        return cast

    def linear_weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``{name: cast}`` for the weight and bias of every `torch.nn.Linear` of `model` on CPU that `__call__`
        casts, named as in ``model.state_dict()``: the parameters to call `model` with through
        ``torch.func.functional_call(..., tie_weights=False)``, which replaces them for that call only (an LM head
        tied to the input embeddings is replaced in the head alone; the embeddings stay float32)."""
        casts = {}
        if not self.keep:
            return casts
        for module_name, module in model.named_modules():
            if type(module) is not torch.nn.Linear:
                continue
            for name, tensor in module.named_parameters(recurse=False):
                if tensor.device.type == "cpu" and (cast := self(tensor)) is not tensor:
                    casts[f"{module_name}.{name}" if module_name else name] = cast
        return casts
