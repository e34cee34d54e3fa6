"""Caching of the selection stages: stable fingerprints, one cached `Dataset.map`, and datasets' progress bars.

A fingerprint is the same for the same models, data and settings in any process and on any machine (datasets'
own hash of a model object changes between processes), so a killed run finds what it had already computed.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Optional

import torch
from datasets import Dataset
from datasets.fingerprint import Hasher
from datasets.utils import logging as ds_logging
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


def cache_file(cache_dir: Optional[str], name: str, fingerprint: str) -> Optional[str]:
    """``{cache_dir}/paser-{name}-{fingerprint}.arrow`` (the folder is created), or None without a `cache_dir`."""
    if cache_dir is None:
        return None
    os.makedirs(cache_dir, exist_ok=True)
    return os.path.join(cache_dir, f"paser-{name}-{fingerprint}.arrow")


def cached_map(dataset: Dataset, function: Callable, name: str, fingerprint: str, cache_dir: Optional[str],
               **map_kwargs) -> Dataset:
    """`dataset.map(function, **map_kwargs)` under `fingerprint`, read back when it was computed before: from
    `cache_file(cache_dir, name, fingerprint)`, or without a `cache_dir` from datasets' cache beside a
    disk-backed dataset."""
    return dataset.map(
        function, new_fingerprint=fingerprint, cache_file_name=cache_file(cache_dir, name, fingerprint), **map_kwargs
    )


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Turn datasets' progress bars on or off inside the block, and back as they were after it."""
    was_enabled = ds_logging.is_progress_bar_enabled()
    (ds_logging.enable_progress_bar if enabled else ds_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (ds_logging.enable_progress_bar if was_enabled else ds_logging.disable_progress_bar)()
