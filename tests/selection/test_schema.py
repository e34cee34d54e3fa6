"""A streamed dataset (`IterableDataset`) is written to disk before selection, or refused under several processes."""

import types

import accelerate
import pytest
from datasets import Dataset
from fixtures import base_config, make_selector, planted_rows

from paser_hf import RandomSelector, materialize


def test_materialize_writes_every_streamed_row_to_a_disk_backed_dataset(tmp_path):
    rows = planted_rows(2)
    data = materialize(Dataset.from_list(rows).to_iterable_dataset(), cache_dir=str(tmp_path), show_progress=False)
    assert isinstance(data, Dataset) and data.to_list() == rows
    assert data.cache_files and all(f["filename"].startswith(str(tmp_path)) for f in data.cache_files)


def test_materialize_returns_a_dataset_as_it_is():
    data = Dataset.from_list(planted_rows(1))
    assert materialize(data) is data


def test_materialize_refuses_a_stream_under_several_processes_and_says_how(monkeypatch):
    monkeypatch.setattr(accelerate, "PartialState", lambda: types.SimpleNamespace(num_processes=2))
    stream = Dataset.from_list(planted_rows(1)).to_iterable_dataset()
    with pytest.raises(TypeError, match=r"write it to disk once before launching, e.g. paser_hf.materialize"):
        materialize(stream)


@pytest.mark.parametrize("make", [lambda cfg: make_selector(cfg), lambda cfg: RandomSelector(cfg)],
                         ids=["paser", "random"])
def test_selectors_pick_the_same_rows_from_a_stream_as_from_the_dataset(tmp_path, make):
    data = Dataset.from_list(planted_rows(4))
    config = base_config(cache_dir=str(tmp_path))
    from_dataset = make(config)(data).to_list()
    from_stream = make(config)(data.to_iterable_dataset()).to_list()
    assert from_stream == from_dataset and len(from_stream) == 3


def test_the_report_says_the_input_was_streamed(tmp_path):
    from paser_hf.selection.schema import STREAMED_NOTE

    selector = make_selector(base_config(cache_dir=str(tmp_path)))
    with pytest.warns(UserWarning, match="IterableDataset"):
        selector(Dataset.from_list(planted_rows(4)).to_iterable_dataset())
    assert STREAMED_NOTE in selector.report_.warnings
    selector(Dataset.from_list(planted_rows(4)))
    assert STREAMED_NOTE not in selector.report_.warnings
