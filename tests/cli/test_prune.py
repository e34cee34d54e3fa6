"""`paser prune` on a tiny saved model."""

import json
import re

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


def test_d_pruner_prunes_for_the_domain_dataset(files, tmp_path, capsys):
    out = tmp_path / "pruned"
    args = ["prune", "--model", files["original"], "--output_dir", str(out), "--method", "d_pruner", "--n_m", "2:4",
            "--calibration_dataset", files["data"], "--domain_dataset", files["data"], "--calibration_samples", "4",
            "--domain_samples", "3", "--regularization_weight", "0.5", "--calibration_max_length", "32"]
    assert main(args) == 0
    assert decoder_sparsity(AutoModelForCausalLM.from_pretrained(out)) == 0.5
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["method"] == "d_pruner" and report["n_m"] == [2, 4]
    assert report["details"]["domain_sequences"] == 3 and report["details"]["regularization_weight"] == 0.5
    assert "d_pruner: sparsity 0.5" in capsys.readouterr().out


@pytest.mark.parametrize("domain,message", [
    (None, "--method d_pruner needs --domain_dataset"),
    ("blank", "--domain_dataset .*has no non-blank text"),
    ("no_text", r"--domain_dataset .*has no text column \(its columns: \['body', 'title'\]\)"),
])
def test_d_pruner_without_usable_domain_texts_is_one_line_and_exit_2(files, tmp_path, capsys, domain, message):
    paths = {"blank": tmp_path / "blank.jsonl", "no_text": tmp_path / "no_text.jsonl"}
    paths["blank"].write_text(json.dumps({"text": "  "}) + "\n")
    paths["no_text"].write_text(json.dumps({"title": "a", "body": "b"}) + "\n")
    args = ["prune", "--model", files["original"], "--output_dir", str(tmp_path / "out"), "--method", "d_pruner",
            "--calibration_dataset", files["data"], "--calibration_samples", "2"]
    if domain:
        args += ["--domain_dataset", str(paths[domain])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("paser: error: ") and re.search(message, err)
    assert not (tmp_path / "out").exists()
