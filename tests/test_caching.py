"""model_fingerprint keys the scoring caches: equal for equal weights in any process, different after any edit."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from fixtures import tiny_llama

from paser_hf.caching import model_fingerprint


def test_equal_weights_give_equal_fingerprints_and_dtype_matters():
    model = tiny_llama()
    assert model_fingerprint(model) == model_fingerprint(copy.deepcopy(model))
    assert model_fingerprint(model) != model_fingerprint(copy.deepcopy(model).to(torch.bfloat16))


def test_one_ulp_outside_the_sample_changes_the_fingerprint():
    model = tiny_llama()
    before = model_fingerprint(model)
    weight = model.get_input_embeddings().weight  # 261 x 32 = 8352 values: the sample takes every 2nd one
    with torch.no_grad():
        flat = weight.view(-1)
        flat[1] = float(np.nextafter(np.float32(flat[1].item()), np.float32(np.inf)))
    assert model_fingerprint(model) != before


def test_the_fingerprint_is_the_same_in_a_fresh_process():
    code = "from paser_hf.caching import model_fingerprint; from fixtures import tiny_llama; " \
           "print(model_fingerprint(tiny_llama()))"
    tests = Path(__file__).resolve().parent
    out = subprocess.run([sys.executable, "-c", code], cwd=tests, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == model_fingerprint(tiny_llama())


def test_cache_file_names_are_pinned(tmp_path):
    """These are the keys users' caches are stored under (and the committed benchmarks/results/mix_full_jsd_cache):
    the prepare, embed and per-shard JSD fingerprints of a fixed tiny setup. They must not change; a change
    silently recomputes every cached stage. (The concepts key may change with the concept extractor.)"""
    from datasets import Dataset
    from fixtures import base_config, make_selector, planted_rows

    make_selector(base_config(cache_dir=str(tmp_path), scoring_shard_rows=16))(Dataset.from_list(planted_rows(8)))
    names = {name for name in os.listdir(tmp_path) if not name.startswith("paser-concepts-")}
    assert names == {
        "paser-prepare-5028f93ec5e74cc3.arrow",
        "paser-embed-982266f427afa027.arrow",
        "paser-jsd-797eed29d89a0a7b.arrow",
        "paser-jsd-dad4c1b1943ef48c.arrow",
    }
