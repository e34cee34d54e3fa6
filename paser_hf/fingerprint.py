"""Stable fingerprints for `Dataset.map` caching: the same models, data and settings give the same key in any
process (datasets' own hash of a model object changes between processes; see STACK-NOTES)."""

from __future__ import annotations

import torch
from datasets.fingerprint import Hasher
from torch import nn

_SAMPLES_PER_TENSOR = 4096


def model_fingerprint(model: nn.Module) -> str:
    """Hash of every parameter's name, shape, dtype, sum and a strided sample of its values.

    Cheap on multi-billion-parameter models (no full copy), and it tells a pruned copy from its original.
    """
    hasher = Hasher()
    hasher.update(type(model).__name__)
    with torch.no_grad():
        for name, param in model.state_dict().items():
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            sample = flat[::step][:_SAMPLES_PER_TENSOR].float().cpu().numpy()
            hasher.update((name, tuple(param.shape), str(param.dtype), float(flat.float().sum()), sample.tobytes()))
    return hasher.hexdigest()


def combine(*parts) -> str:
    """One fingerprint from several values (strings, numbers, dicts of settings)."""
    return Hasher.hash(parts)
