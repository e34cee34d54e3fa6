"""The demo pipeline (`run_demo`) on tiny saved models and on the real offline models, and the shipped demo data."""

import ast
import json
import re

import pytest
from fixtures import save_cli_files

from paser_hf.demo import DemoConfig, run_demo
from paser_hf.evaluation import load_mc_jsonl
from paser_hf.models import DEMO_MC, DEMO_TEXT, DEMO_TRAIN


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Saved tiny original and pruned Llamas and a tiny SentenceTransformer."""
    return save_cli_files(tmp_path_factory.mktemp("demo"))


def test_run_demo_tiny(files, tmp_path):
    config = DemoConfig(output_dir=str(tmp_path / "demo"), original_model=files["original"],
                        embedding_model=files["embedder"], prune_method="magnitude", max_rows=24, max_steps=2,
                        max_length=512, calibration_samples=4, eval_max_words=40, mc_limit=4, show_progress=False)
    result = run_demo(config)
    assert [r["model"] for r in result.rows] == ["original", "pruned", "recovered"]
    assert result.rows[1]["nonzero_params"] < result.rows[0]["nonzero_params"]
    assert {"selection", "training", "total"} <= set(result.timings)
    assert "| recovered" in result.table()
    assert json.loads((tmp_path / "demo" / "demo_results.json").read_text())["selection"]["selected"] == 6


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_demo_instruction_set_shape():
    rows = _jsonl(DEMO_TRAIN)
    assert 300 <= len(rows) <= 400
    assert all(set(r) == {"instruction", "input", "output", "capability"} for r in rows)
    counts = {c: sum(r["capability"] == c for r in rows) for c in {r["capability"] for r in rows}}
    assert set(counts) == {"arithmetic", "python", "rewriting", "facts"} and min(counts.values()) >= 80
    assert len({(r["instruction"], r["input"]) for r in rows}) == len(rows)
    assert all(r["instruction"].strip() and r["output"].strip() for r in rows)


_STEP = re.compile(r"(\d+) ([-+×÷]) (\d+) = (\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a / b}


def test_demo_arithmetic_answers_recompute():
    for row in (r for r in _jsonl(DEMO_TRAIN) if r["capability"] == "arithmetic"):
        steps = _STEP.findall(row["output"])
        assert steps, row
        for a, op, b, result in steps:
            assert _OPS[op](int(a), int(b)) == int(result), row
        assert row["output"].endswith(f"The answer is {steps[-1][3]}."), row
        used = {int(x) for step in steps for x in (step[0], step[2], step[3])}
        assert set(map(int, re.findall(r"\d+", row["instruction"]))) <= used, row


def test_demo_python_answers_compile_and_define_the_function():
    for row in (r for r in _jsonl(DEMO_TRAIN) if r["capability"] == "python"):
        code = re.fullmatch(r"```python\n(.*)```", row["output"], re.S).group(1)
        tree = ast.parse(code)
        name = re.search(r"`(\w+)`", row["instruction"]).group(1)
        assert [node.name for node in tree.body] == [name]
        namespace = {}
        exec(compile(tree, name, "exec"), namespace)
        assert callable(namespace[name])


def test_demo_eval_sets():
    mc = load_mc_jsonl(DEMO_MC)
    assert 90 <= len(mc) <= 120
    for row in mc:
        if row["kind"] == "arithmetic":
            a, op, b = re.search(r"What is (\d+) ([+×]) (\d+)\?", row["query"]).groups()
            assert int(row["choices"][row["gold"]]) == _OPS[op](int(a), int(b))
        if row["kind"] == "first_letter":
            word = re.search(r"'(\w+)'", row["query"]).group(1)
            assert row["choices"][row["gold"]] == word[0].upper()
        assert len(set(row["choices"])) == len(row["choices"])
    train_text = DEMO_TRAIN.read_text(encoding="utf-8")
    for row in (r for r in mc if r["kind"] == "capital"):
        country = re.search(r"capital of (.+)\?", row["query"]).group(1)
        assert f"capital of {country}" not in train_text
    assert len(DEMO_TEXT.read_text(encoding="utf-8").split()) >= 2000


@pytest.mark.slow
def test_real_demo_reduced(tmp_path):
    """The demo on SmolLM2 and MiniLM at reduced size: the pruned model is worse and the table is complete."""
    config = DemoConfig(output_dir=str(tmp_path), max_rows=40, max_steps=3, eval_max_words=150, mc_limit=8,
                        calibration_samples=4)
    result = run_demo(config)
    original, pruned, recovered = result.rows
    assert pruned["perplexity"] > original["perplexity"]
    assert recovered["nonzero_params"] == pruned["nonzero_params"]
    assert result.selection["selected"] == 10
