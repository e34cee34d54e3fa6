import warnings

import pytest
import torch
from datasets import Dataset
from fixtures import base_config, make_selector, planted_rows

import paser_hf.selection.scoring
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
    monkeypatch.setattr(paser_hf.selection.scoring, "native_bf16", lambda device: native)
    selector = make_selector(base_config(num_clusters=2))
    selector.original_model.to(dtype)
    messages = _dtype_warnings(selector, planted_rows(3))
    assert len(messages) == warned
    if warned:
        assert "float32" in messages[0] and "cpu" in messages[0]


def test_load_data_reads_files_and_saved_folders_and_names_what_is_wrong(tmp_path):
    from datasets import DatasetDict

    from paser_hf.models import load_data

    rows = [{"instruction": f"say {i}", "output": str(i)} for i in range(5)]
    (tmp_path / "rows.jsonl").write_text("".join(f'{{"instruction": "say {i}", "output": "{i}"}}\n' for i in range(5)))
    assert load_data(str(tmp_path / "rows.jsonl")).to_list() == rows
    assert len(load_data(str(tmp_path / "rows.jsonl"), max_rows=2)) == 2
    saved = DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:1])})
    saved.save_to_disk(tmp_path / "saved")
    assert len(load_data(str(tmp_path / "saved"), split="test")) == 1
    with pytest.raises(ValueError, match="not 'dev'; pick one with --dataset_split"):
        load_data(str(tmp_path / "saved"), split="dev")
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_data(str(tmp_path / "rows.txt"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_data(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="max_rows=0"):
        load_data(str(tmp_path / "rows.jsonl"), max_rows=0)
