"""Stable fingerprints for `Dataset.map` caching: the same models, data and settings give the same key in any
process (datasets' own hash of a model object changes between processes; see STACK-NOTES)."""

from __future__ import annotations

import torch
from datasets.fingerprint import Hasher
from torch import nn

_SAMPLES_PER_TENSOR = 4096
_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def model_fingerprint(model: nn.Module) -> str:
    """Hash of every parameter's name, shape, dtype, a strided sample of its values and the integer sum of
    their bit patterns.

    Cheap on multi-billion-parameter models (no full copy), it tells a pruned copy from its original, and it is
    the same on every machine: an integer sum does not depend on the order a CPU's vector units add in, where a
    floating-point sum does (so a cache written on one machine is found on another).
    """
    hasher = Hasher()
    hasher.update(type(model).__name__)
    with torch.no_grad():
        for name, param in model.state_dict().items():
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            sample = flat[::step][:_SAMPLES_PER_TENSOR].float().cpu().numpy()
            bits = int(flat.view(_SAME_SIZE_INT[flat.element_size()]).sum(dtype=torch.int64))
            hasher.update((name, tuple(param.shape), str(param.dtype), bits, sample.tobytes()))
    return hasher.hexdigest()


def combine(*parts) -> str:
    """One fingerprint from several values (strings, numbers, dicts of settings)."""
    return Hasher.hash(parts)
