"""`paser select` on tiny saved models: the subset, its report and the one-line errors."""

import json
import subprocess
import sys

import pytest
from datasets import load_from_disk
from fixtures import CLI_ROWS

from paser_hf.cli import main


def _select_args(files, output, *extra):
    return ["select", "--dataset", files["data"], "--original_model", files["original"], "--pruned_model",
            files["pruned"], "--output", str(output), "--embedding_model", files["embedder"], "--max_length", "96",
            "--show_progress", "false", *extra]


@pytest.mark.parametrize("budget, message", [("1.5", "out of range"), ("0", "out of range"), ("abc", "budget")])
def test_bad_budget_is_one_line_and_exit_2(files, tmp_path, budget, message):
    result = subprocess.run(
        [sys.executable, "-m", "paser_hf.cli", *_select_args(files, tmp_path / "s.jsonl", "--budget", budget)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paser: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_select_writes_jsonl_subset_and_report(files, tmp_path):
    out = tmp_path / "subset.jsonl"
    config = tmp_path / "select.yaml"
    config.write_text("budget: 0.25\nnum_clusters: 2\nreport_dir: " + str(tmp_path / "figures") + "\n")
    assert main(_select_args(files, out, "--config", str(config))) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert all(r in CLI_ROWS for r in rows)
    report = json.loads((tmp_path / "subset.report.json").read_text())
    assert report["num_selected"] == 6 and report["k"] == 2
    assert (tmp_path / "figures" / "report.json").is_file()
    assert list((tmp_path / "figures").glob("*.png"))


@pytest.mark.filterwarnings("ignore:Scoring in bfloat16")
@pytest.mark.parametrize("fastest", ["float32", "bfloat16"])
def test_select_dtype_auto_loads_the_fastest_dtype(files, tmp_path, monkeypatch, capsys, fastest):
    monkeypatch.setattr("paser_hf.models.fastest_dtype", lambda device: fastest)
    out = tmp_path / "subset.jsonl"
    assert main(_select_args(files, out, "--budget", "4", "--num_clusters", "2")) == 0
    assert capsys.readouterr().err.count(f"dtype auto -> {fastest}") == 2
    assert len(out.read_text().splitlines()) == 4


def test_select_saves_a_dataset_folder(files, tmp_path):
    out = tmp_path / "subset"
    assert main(_select_args(files, out, "--budget", "5", "--num_clusters", "2")) == 0
    subset = load_from_disk(str(out))
    assert len(subset) == 5
    assert len(load_from_disk(str(out / "scores"))) == len(CLI_ROWS)
    assert json.loads((out / "report" / "report.json").read_text())["budget"] == 5


@pytest.mark.parametrize("method", ["random", "longest", "cluster_balanced", "ifd"])
def test_select_baselines_at_a_token_budget(files, tmp_path, method):
    out = tmp_path / "subset"
    args = _select_args(files, out, "--method", method, "--budget", "0.3", "--budget_unit", "tokens",
                        "--num_clusters", "2")
    assert main(args) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert (report["method"], report["budget_unit"]) == (method, "tokens")
    assert report["budget"] <= report["tokens"]["selected"] < report["budget"] + 96  # within one row (max_length)
    assert len(load_from_disk(str(out))) == report["num_selected"]
    assert len(load_from_disk(str(out / "scores"))) == len(CLI_ROWS)


def test_select_paser_names_unit_and_allocation_in_report_and_card(files, tmp_path):
    out = tmp_path / "subset"
    assert main(_select_args(files, out, "--budget", "0.3", "--budget_unit", "tokens", "--allocation", "size_cds",
                             "--num_clusters", "2")) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert (report["method"], report["budget_unit"], report["allocation"]) == ("paser", "tokens", "size_cds")
    card = (out / "README.md").read_text()
    assert "| Allocation | `size_cds`" in card and f"B = {report['budget']} tokens (0.3 of the tokens)" in card


def test_push_to_hub_is_for_paser_subsets(files, tmp_path, capsys):
    args = _select_args(files, tmp_path / "s", "--method", "random", "--push_to_hub", "me/subset")
    assert main(args) == 2
    assert "publishes PASER selections" in capsys.readouterr().err
