import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from fixtures import base_config, make_selector, planted_rows, tiny_llama, tiny_tokenizer

from paser_hf import IfdSelector
from paser_hf.selection import baselines, divergence

HERE = Path(__file__).parent


class Interrupted(Exception):
    pass


def test_killed_scoring_resumes_without_rescoring(tmp_path, monkeypatch):
    data = Dataset.from_list(planted_rows(8))  # 24 rows -> 6 shards of 4
    config = base_config(cache_dir=str(tmp_path), scoring_shard_rows=4)
    reference = make_selector(base_config(scoring_shard_rows=4))
    reference(data)

    original_call = divergence.JsdScorer.__call__
    scored = []

    def counting(self, batch):
        if len(scored) == 3 and not resumed:
            raise Interrupted("killed during shard 4")
        scored.append(len(batch["input_ids"]))
        return original_call(self, batch)

    monkeypatch.setattr(divergence.JsdScorer, "__call__", counting)
    resumed = False
    with pytest.raises(Interrupted):
        make_selector(config)(data)
    assert sum(scored) == 12
    resumed, scored[:] = True, []
    selector = make_selector(config)
    selector(data)
    assert sum(scored) == 12  # only the three shards that were not finished
    np.testing.assert_allclose(selector.scores_["paser_jsd"], reference.scores_["paser_jsd"], atol=1e-7)
    assert list(selector.selected_indices_) == list(reference.selected_indices_)


def test_killed_ifd_scoring_resumes_without_rescoring(tmp_path, monkeypatch):
    """IFD caches its losses per shard in `cache_dir` as PASER's JSD does: a rerun scores only the unfinished shards."""
    data = Dataset.from_list(planted_rows(8))  # 24 rows -> 6 shards of 4
    model, tok = tiny_llama(seed=3), tiny_tokenizer()
    reference = IfdSelector(model, tok, base_config(scoring_shard_rows=4))
    reference(data)

    original_call = baselines.IfdScorer.__call__
    scored = []

    def counting(self, batch):
        if len(scored) == 3 and not resumed:
            raise Interrupted("killed during shard 4")
        scored.append(len(batch["input_ids"]))
        return original_call(self, batch)

    monkeypatch.setattr(baselines.IfdScorer, "__call__", counting)
    config = base_config(cache_dir=str(tmp_path), scoring_shard_rows=4)
    resumed = False
    with pytest.raises(Interrupted):
        IfdSelector(model, tok, config)(data)
    assert sum(scored) == 12
    assert len(list(tmp_path.glob("paser-ifd-*.arrow"))) == 3
    resumed, scored[:] = True, []
    selector = IfdSelector(model, tok, config)
    selector(data)
    assert sum(scored) == 12  # only the three shards that were not finished
    for column in ("loss_conditioned", "loss_response", "ifd"):
        np.testing.assert_allclose(selector.scores_[column], reference.scores_[column], rtol=1e-6)
    assert list(selector.selected_indices_) == list(reference.selected_indices_)


def test_two_cpu_processes_select_what_one_does(tmp_path):
    """`accelerate launch --multi_gpu` on a machine without GPUs runs torchrun processes that PASER joins with gloo
    (accelerate's `--cpu` launcher starts one process unless MPI is set up)."""
    sys.path.insert(0, str(HERE))
    from mp_select import run

    single = run()
    out = tmp_path / "outcome"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        str(HERE / "mp_select.py"), str(out),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        outcome = json.loads(Path(f"{out}.rank{rank}").read_text())
        assert outcome["selected"] == single["selected"]
        assert outcome["rows"] == single["rows"] == len(single["selected"])
        np.testing.assert_allclose(outcome["jsd"], single["jsd"], atol=1e-6)
