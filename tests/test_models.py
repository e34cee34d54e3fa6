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
    with pytest.raises(ValueError, match="max_rows=0"):
        load_data(str(tmp_path / "rows.jsonl"), max_rows=0)


def _parquet_of_text(path):
    path.write_text("not parquet at all")


def _folder_of_notes(path):
    path.mkdir()
    (path / "notes.md").write_text("hello")


def _folder_of_bad_jsonl(path):
    path.mkdir()
    (path / "part.jsonl").write_text('{"a": 1}\nnot json\n')


#: Every bad input `load_data` meets: (name, how the file is made, the one-line error it gives).
BAD_DATA = [
    ("rows.jsonl", lambda p: p.write_text('{"a": 1}\n{"a": 2}\nnot json\n{"a": 3}\n'),
     r"rows.jsonl, line 3: not valid JSON \(Expecting value, column 1\); every line must be one JSON object$"),
    ("rows.json", lambda p: p.write_text('[{"a": 1},\n {"a": 2'),
     r"rows.json, line 2: not valid JSON \(Expecting ',' delimiter, column 9\); the file must hold one JSON array"),
    ("rows.csv", lambda p: p.write_text("a,b\n1,2\n3,4,5\n"),
     r"rows.csv: not valid CSV \(Error tokenizing data. C error: Expected 2 fields in line 3, saw 3\); every row "),
    ("rows.parquet", _parquet_of_text, r"rows.parquet: not valid Parquet \(Parquet magic bytes not found in footer"),
    ("empty.jsonl", lambda p: p.write_text(""), r"empty.jsonl: the file is empty; it needs at least one row$"),
    ("rows.txt", lambda p: p.write_text("x"),
     r"rows.txt: unsupported file type '.txt'; use .json, .jsonl, .parquet or .csv$"),
    ("notes", _folder_of_notes, r"notes: neither a dataset saved with save_to_disk \(no state.json or "
                                r"dataset_dict.json\) nor a folder of .json, .jsonl, .parquet or .csv files$"),
    ("parts", _folder_of_bad_jsonl, r"parts: its data files cannot be read \(.*\); load each file on its own"),
    ("missing.jsonl", None, r"missing.jsonl: no such file or folder$"),
]


@pytest.mark.parametrize("name, make, message", BAD_DATA, ids=[case[0] for case in BAD_DATA])
def test_load_data_names_the_bad_file_and_the_fix_in_one_line(tmp_path, name, make, message):
    from paser_hf.models import load_data

    if make is not None:
        make(tmp_path / name)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        load_data(str(tmp_path / name))
    assert "\n" not in str(error.value)


def _config_without_tokenizer(path):
    from fixtures import tiny_llama

    tiny_llama().config.save_pretrained(path)


def _bert_folder(path):
    from transformers import BertConfig

    BertConfig(vocab_size=261, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               architectures=["BertModel"]).save_pretrained(path)


#: Every bad model `load_model_and_tokenizer` meets: (name, how its folder is made, the one-line error).
BAD_MODELS = [
    ("no-such-model", None, r"no-such-model: no such local folder, and not loadable as a Hub id \(HF_HUB_OFFLINE is "
                            r"set, so the Hub was not asked\); give the folder of a saved causal LM"),
    ("empty", lambda p: p.mkdir(), r"empty: no config.json, so not a saved model; save one there with "),
    ("bert", _bert_folder, r"bert: holds a BertModel, not a causal language model; give a decoder-only LM"),
    ("untokenized", _config_without_tokenizer, r"untokenized: no usable tokenizer \(.*\); save it beside the model "),
]


@pytest.mark.parametrize("name, make, message", BAD_MODELS, ids=[case[0] for case in BAD_MODELS])
def test_load_model_says_what_the_path_is_instead_of_a_hub_error(tmp_path, monkeypatch, name, make, message):
    from paser_hf.models import load_model_and_tokenizer

    monkeypatch.chdir(tmp_path)
    if make is not None:
        make(tmp_path / name)
    with pytest.raises(ValueError, match=message) as error:
        load_model_and_tokenizer(name)
    assert "\n" not in str(error.value)
