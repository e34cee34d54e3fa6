"""`paser evaluate` on tiny saved models and the shipped demo eval data."""

import json

import pytest

from paser_hf.cli import main
from paser_hf.models import DEMO_MC, DEMO_TEXT


def test_evaluate_prints_one_table(files, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", files["original"], files["pruned"], "--text_file", str(DEMO_TEXT), "--mc_file",
            str(DEMO_MC), "--max_words", "40", "--mc_limit", "4", "--max_length", "64", "--output_json", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "perplexity" in table and "mc_accuracy" in table
    assert files["original"] in table and files["pruned"] in table
    rows = json.loads(out.read_text())
    assert [r["mc_n"] for r in rows] == [4, 4] and all(r["perplexity"] > 1 for r in rows)


def test_evaluate_puts_lm_eval_task_scores_in_the_same_table(files, local_task, tmp_path, capsys):
    pytest.importorskip("lm_eval", reason="the optional extra paser-hf[lm-eval] is not installed")
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", files["original"], files["pruned"], "--mc_file", str(DEMO_MC), "--mc_limit", "2",
            "--lm_eval_tasks", "tiny_mc", "--lm_eval_include_path", local_task, "--output_json",
            str(out)]
    assert main(args) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "mc_accuracy" in header and "tiny_mc/acc" in header and "tiny_mc/acc_norm" in header
    assert all(0 <= row["tiny_mc/acc"] <= 1 for row in json.loads(out.read_text()))


def test_evaluate_a_hub_task_offline_is_one_error_line_before_any_model_loads(local_task, tmp_path, capsys):
    pytest.importorskip("lm_eval", reason="the optional extra paser-hf[lm-eval] is not installed")
    assert main(["evaluate", "--model", str(tmp_path / "never_loaded"), "--lm_eval_tasks", "arc_easy",
                 "--lm_eval_include_path", local_task]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("paser: error:")]
    assert len(errors) == 1 and "'arc_easy' reads its data from the Hub" in errors[0]
