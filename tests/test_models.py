import warnings

import pytest
import torch
from datasets import Dataset
from fixtures import base_config, make_selector, planted_rows

import paser_hf.selection.divergence
from paser_hf.models import fastest_dtype, native_bf16


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected",
    [(False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16"), (True, True, "bfloat16")],
)
def test_cpu_dtype_follows_the_bf16_instructions(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert native_bf16("cpu") is (expected == "bfloat16")
    assert fastest_dtype(torch.device("cpu")) == expected


def test_other_devices_get_float32():
    assert fastest_dtype("meta") == "float32"


def _dtype_warnings(selector, rows):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        selector(Dataset.from_list(rows))
    return [str(w.message) for w in caught if "native bfloat16" in str(w.message)]


@pytest.mark.parametrize("native, dtype, warned", [(False, torch.bfloat16, 1), (True, torch.bfloat16, 0),
                                                   (False, torch.float32, 0)])
def test_selector_warns_about_emulated_bf16_scoring(monkeypatch, native, dtype, warned):
    monkeypatch.setattr(paser_hf.selection.divergence, "native_bf16", lambda device: native)
    selector = make_selector(base_config(num_clusters=2))
    selector.original_model.to(dtype)
    messages = _dtype_warnings(selector, planted_rows(3))
    assert len(messages) == warned
    if warned:
        assert "float32" in messages[0] and "cpu" in messages[0]
