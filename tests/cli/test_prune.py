"""`paser prune` on a tiny saved model."""

import json

import pytest
from fixtures import decoder_sparsity
from transformers import AutoModelForCausalLM

from paser_hf.cli import main
from paser_hf.cli.prune import parse_n_m


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_prune_round_trips(files, tmp_path, method, capsys):
    out = tmp_path / "pruned"
    args = ["prune", "--model", files["original"], "--output_dir", str(out), "--method", method, "--sparsity", "0.5",
            "--calibration_samples", "4", "--calibration_max_length", "32"]
    assert main(args) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert decoder_sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert json.loads((out / "pruning_report.json").read_text())["method"] == method
    assert "sparsity 0.5" in capsys.readouterr().out


def test_n_m_is_written_n_colon_m():
    assert parse_n_m("2:4") == (2, 4) and parse_n_m(None) is None
    with pytest.raises(ValueError, match="write it as N:M"):
        parse_n_m("2-4")
