"""`paser evaluate` on tiny saved models and the shipped demo eval data."""

import json

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
